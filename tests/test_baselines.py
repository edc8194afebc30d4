"""Blind baselines: formats, determinism, and that the text-only model really learns text leaks."""

from __future__ import annotations

import pytest
from helpers import write_leaky_set

from stqa.data import tgifqa
from stqa.data.baselines import BASELINES, MajorityBaseline, RandomBaseline, TextOnlyBaseline, fit_baseline
from stqa.metrics import score_task


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> dict[str, tuple[list, list]]:
    root = tmp_path_factory.mktemp("leaky")
    write_leaky_set(root, n_train=300, n_test=100, seed=1)
    return {t: (tgifqa.load(root, t, "train"), tgifqa.load(root, t, "test")) for t in tgifqa.TASKS}


def test_registry():
    assert set(BASELINES) == {"random", "majority", "text-only"}
    with pytest.raises(ValueError, match="unknown baseline"):
        fit_baseline("oracle", [])


@pytest.mark.parametrize("task", tgifqa.TASKS)
def test_text_only_learns_leaks_that_random_and_majority_cannot(leaky, task):
    train, test = leaky[task]
    scores = {name: score_task(task, test, fit_baseline(name, train, seed=0).predict(test)) for name in BASELINES}
    if task == "count":
        assert scores["text-only"]["mse"] < 0.25 * scores["majority"]["mse"]
        assert scores["text-only"]["mse"] < 0.25 * scores["random"]["mse"]
    else:
        assert scores["text-only"]["accuracy"] > scores["random"]["accuracy"] + 0.4
        assert scores["text-only"]["accuracy"] > scores["majority"]["accuracy"] + 0.4


def test_prediction_formats_and_determinism(leaky):
    for task, (train, test) in leaky.items():
        for name in BASELINES:
            a = fit_baseline(name, train, seed=3).predict(test)
            b = fit_baseline(name, train, seed=3).predict(test)
            assert a == b, (task, name)
            assert len(a) == len(test)
            kind = {"count": float, "action": int, "transition": int, "frameqa": str}[task]
            assert all(type(p) is kind for p in a), (task, name)
    train, test = leaky["action"]
    assert RandomBaseline(0).fit(train).predict(test) != RandomBaseline(1).fit(train).predict(test)


def test_majority_and_random_values():
    def r(task, answer, i, answer_type=None):
        cands = ("a", "b", "c", "d", "e") if task in ("action", "transition") else ()
        return tgifqa.QARecord(task, f"Q{i}", i, f"g{i}", "q ?", answer, cands, answer_type)

    counts = [r("count", y, i) for i, y in enumerate([0, 2, 4, 6])]  # targets 1, 2, 4, 6
    assert MajorityBaseline().fit(counts).predict(counts[:1]) == [3.25]
    assert set(RandomBaseline(0).fit(counts).predict(counts * 50)) <= {float(v) for v in range(1, 7)}
    mc = [r("action", a, i) for i, a in enumerate([3, 3, 1, 0])]
    assert MajorityBaseline().fit(mc).predict(mc) == [3] * 4
    fq = [r("frameqa", a, i, "color") for i, a in enumerate(["red", "blue", "blue", "red", "green"])]
    assert MajorityBaseline().fit(fq).predict(fq[:2]) == ["blue", "blue"]  # tie -> alphabetical
    assert set(RandomBaseline(0).fit(fq).predict(fq * 20)) == {"red", "blue", "green"}


def test_misuse_is_rejected(leaky):
    count_train, _ = leaky["count"]
    action_train, action_test = leaky["action"]
    with pytest.raises(RuntimeError, match="fit"):
        TextOnlyBaseline().predict(action_test)
    with pytest.raises(ValueError, match="one task"):
        MajorityBaseline().fit(count_train + action_train)
    with pytest.raises(ValueError, match="was fit on"):
        MajorityBaseline().fit(count_train).predict(action_test)
    with pytest.raises(ValueError, match="at least one"):
        TextOnlyBaseline().fit([])
