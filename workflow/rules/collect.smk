# Records -> model selection -> tables (text, LaTeX, CSV, markdown, summary.json).


rule collect:
    input:
        markers=[batch_marker(key) for key in BATCHES],
        plan=PLAN,
    output:
        "results/records.jsonl",
    log:
        "results/logs/collect.log",
    shell:
        "{PY} moebench.cli.collect --plan {input.plan} --out {output} > {log} 2>&1"


rule tables:
    input:
        "results/records.jsonl",
    output:
        directory("results/tables"),
    params:
        order=" ".join(config["report"]["algorithm_order"]),
    log:
        "results/logs/tables.log",
    shell:
        "{PY} moebench.cli.tables --records {input} --out {output} "
        "--algorithm-order {params.order} > {log} 2>&1"
