# The DomainBed study: dataset -> train -> collect -> tables -> figures and ours-vs-paper.
include: "dg/common.smk"
include: "dg/data.smk"
include: "dg/train.smk"
include: "dg/collect.smk"
include: "dg/report.smk"
