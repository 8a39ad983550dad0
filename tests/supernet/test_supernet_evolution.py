"""HAT's evolutionary search: brute-force optimum, feasibility, seeding, resume, random search."""
import numpy as np
import pytest

from moebench.errors import ParamsError, RunError
from moebench.hparams import seed_hash
from moebench.runs import RunState
from moebench.supernet.evolution import EvoSpec, Evaluator, evolution_search, random_search
from moebench.supernet.space import Space

SMALL = {  # 3744 networks: small enough for brute force
    "encoder_embed_dim": [16, 8], "encoder_layer_num": [1],
    "encoder_ffn_embed_dim": [32, 16], "encoder_self_attention_heads": [2, 1],
    "decoder_embed_dim": [16, 12, 8], "decoder_layer_num": [2, 1],
    "decoder_ffn_embed_dim": [32, 24, 16], "decoder_self_attention_heads": [2, 1],
    "decoder_ende_attention_heads": [2, 1], "decoder_arbitrary_ende_attn": [-1],
    "qkv_dim": 4,
}


@pytest.fixture(scope="module")
def space():
    return Space.from_params(SMALL)


def latency(space):
    """A latency law: grows with every dimension (ms)."""
    w = np.array([0.5, 3, 0.2, 1, 0.6, 8, 0.25, 1.5, 1.5, 2])
    return lambda arch: float(space.raw_features(arch) @ w) + (
        2 * arch["decoder_layer_num"] * np.mean(arch["decoder_ffn_embed_dim"][:arch["decoder_layer_num"]]) / 32)


def fitness(space, seed=0):
    """A 'valid loss': lower for bigger models, with a fixed per-architecture perturbation."""
    def f(arch):
        raw = space.raw_features(arch)
        capacity = raw[[0, 2, 4, 6]].sum() / 20 + 2 * raw[5] + raw[[3, 7, 8, 9]].sum() / 2
        bump = np.random.default_rng(seed_hash(space.arch_key(arch), seed)).random()
        return float(10 - capacity + 0.3 * bump)
    return f


def brute_force(space, fit, lat, limit):
    feasible = [a for a in space.enumerate() if lat(a) <= limit]
    return min(feasible, key=fit)


@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.8])
def test_evolution_finds_the_brute_force_optimum_and_stays_feasible(space, quantile):
    lat, fit = latency(space), fitness(space)
    lats = sorted(lat(a) for a in space.enumerate())
    limit = lats[int(quantile * len(lats))]
    best = brute_force(space, fit, lat, limit)
    seen = []
    ev = Evaluator(space, lambda a: seen.append(a) or fit(a), lat, limit)
    spec = EvoSpec(population=40, parents=10, mutations=15, crossovers=15, mutation_prob=0.3,
                   iterations=25)
    result = evolution_search(space, spec, ev, np.random.default_rng(0))
    assert space.arch_key(result.arch) == space.arch_key(best)
    assert result.fitness == fit(best) and result.latency <= limit
    assert all(lat(a) <= limit for a in seen)  # no infeasible candidate is ever scored
    assert len(result.history) == 25 and result.evaluations == len(seen) < space.count()
    fits = [h["best_fitness"] for h in result.history]
    assert fits == sorted(fits, reverse=True)


def test_hat_population_layout(space):
    lat, fit = latency(space), fitness(space)
    spec = EvoSpec(population=12, parents=3, mutations=4, crossovers=2, iterations=3)
    ev = Evaluator(space, fit, lat, 1e9)
    result = evolution_search(space, spec, ev, np.random.default_rng(1))
    assert [h["population"] for h in result.history] == [12, 9, 9]
    assert [h["feasible"] for h in result.history] == [12, 9, 9]
    again = evolution_search(space, spec, Evaluator(space, fit, lat, 1e9), np.random.default_rng(1))
    assert again.arch == result.arch and again.history == result.history


def test_infeasible_limit_is_one_line(space):
    ev = Evaluator(space, fitness(space), latency(space), limit=0.0)
    with pytest.raises(RunError, match="no random architecture within the latency limit 0 ms after 50"):
        evolution_search(space, EvoSpec(population=4, parents=2, max_tries=50), ev,
                         np.random.default_rng(0))


def test_kill_and_resume_gives_the_same_records(space, tmp_path):
    lat, fit = latency(space), fitness(space)
    spec = EvoSpec(population=20, parents=5, mutations=8, crossovers=7, iterations=6)
    limit = 60.0
    ref_run = RunState(tmp_path / "ref")
    ref_run.start({"seed": 5})
    ref = evolution_search(space, spec, Evaluator(space, fit, lat, limit),
                           np.random.default_rng(5), run=ref_run, base={"seed": 5})

    class Killed(Exception):
        pass

    calls = {"n": 0}

    def dying(arch):
        calls["n"] += 1
        if calls["n"] == 45:  # inside the third generation's scoring
            raise Killed
        return fit(arch)

    run = RunState(tmp_path / "run")
    run.start({"seed": 5})
    with pytest.raises(Killed):
        evolution_search(space, spec, Evaluator(space, dying, lat, limit),
                         np.random.default_rng(5), run=run, base={"seed": 5})
    assert 0 < len(run.records()) < 6
    resumed = evolution_search(space, spec, Evaluator(space, fit, lat, limit),
                               np.random.default_rng(123), run=run, base={"seed": 5})
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("step_time", "mem_gb")}  # noqa
                        for r in rs]
    assert strip(run.records()) == strip(ref_run.records())
    assert resumed.arch == ref.arch and resumed.evaluations == ref.evaluations


def test_random_search_uses_the_given_evaluations_and_is_feasible(space):
    lat, fit = latency(space), fitness(space)
    ev = Evaluator(space, fit, lat, 40.0)
    result = random_search(space, ev, 30, np.random.default_rng(0))
    assert ev.evaluations == 30 == result.evaluations and result.latency <= 40.0
    assert result.fitness == min(ev.fitness_cache.values())


def test_evolution_beats_random_at_equal_evaluations(space):
    lat, fit = latency(space), fitness(space)
    wins = 0
    for seed in range(5):
        spec = EvoSpec(population=20, parents=5, mutations=8, crossovers=7, iterations=8)
        evo = evolution_search(space, spec, Evaluator(space, fit, lat, 50.0),
                               np.random.default_rng(seed))
        rnd = random_search(space, Evaluator(space, fit, lat, 50.0), evo.evaluations,
                            np.random.default_rng(seed))
        wins += evo.fitness <= rnd.fitness
    assert wins >= 4


@pytest.mark.parametrize("params, message", [
    ({"parents": 200}, "supernet.search.evolution.parents: 200 is above population = 125"),
    ({"mutation_prob": 1.5}, "mutation_prob: 1.5 must be a number in [0, 1]"),
    ({"iterations": 0}, "iterations: 0 must be a positive integer"),
    ({"crossovers": -1}, "crossovers: -1 must be an integer >= 0"),
    ({"elite": 3}, "supernet.search.evolution.elite: unknown key"),
])
def test_spec_refuses_with_one_line(params, message):
    with pytest.raises(ParamsError) as err:
        EvoSpec.from_params(params)
    assert message in str(err.value)
    assert EvoSpec.from_params({}) == EvoSpec(125, 25, 50, 50, 0.3, 30)
