"""ST-VQA model: shapes, masks, padding invariance, losses, one optimisation step per head."""

from __future__ import annotations

import pytest
import torch

from stqa.models.stvqa import STVQA, VARIANTS, ModelConfig, MultiTaskStep, task_loss

C, V, H = 12, 40, 16
ALL = ["count", "action", "transition", "frameqa"]


def make_model(variant: str, backbone: str | None = None, impl: str = "reference", dropout: float = 0.0) -> STVQA:
    torch.manual_seed(0)
    cfg = ModelConfig(
        variant=variant, tasks=ALL, vocab_size=V, feature_dim=128 if backbone else C, num_answers=7,
        embed_dim=8, hidden_dim=H, att_hidden_dim=8, dropout=dropout, backbone=backbone, attention_impl=impl,
    )
    return STVQA(cfg)


def clip_batch(b: int = 3, t: int = 6, lengths=(6, 3, 1)):
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(b, t, 7, 7, C, generator=g)
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    feats[~mask] = 0
    return feats, mask


def questions(b: int = 3, mc: bool = False, lengths=(7, 4, 2)):
    g = torch.Generator().manual_seed(2)
    shape = (b, 5, 7) if mc else (b, 7)
    tok = torch.randint(2, V, shape, generator=g)
    lens = torch.tensor(lengths)
    if mc:
        lens = lens[:, None].expand(b, 5).clone()
        lens[:, 1] = 1
    pos = torch.arange(7)
    tok = tok.masked_fill(pos >= lens[..., None], 0)
    return tok, lens


def model_and_batch(variant: str):
    """An eval-mode model, features + frame mask, open-ended and multiple-choice questions + lengths."""
    return make_model(variant).eval(), *clip_batch(), *questions(), *questions(mc=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_attention_for_every_variant(variant):
    model, feats, mask, tok, lens, mtok, mlens = model_and_batch(variant)
    out = model("count", tok, lens, mask, features=feats)
    assert out.scores.shape == (3,)
    assert model("frameqa", tok, lens, mask, features=feats).scores.shape == (3, 7)
    mc = model("action", mtok, mlens, mask, features=feats)
    assert mc.scores.shape == (3, 5)
    if variant in ("tp", "sptp"):
        w = out.temporal_attention
        assert w.shape == (3, 6)
        torch.testing.assert_close(w.sum(-1), torch.ones(3))
        assert float(w[~mask].detach().abs().sum()) == 0.0  # padded frames get no weight
        assert mc.temporal_attention.shape == (3, 5, 6)
    else:
        assert out.temporal_attention is None
    if variant in ("sp", "sptp"):
        s = out.spatial_attention
        assert s.shape == (3, 6, 49)
        torch.testing.assert_close(s[mask].sum(-1), torch.ones(int(mask.sum())))
        assert mc.spatial_attention.shape == (3, 5, 6, 49)
    else:
        assert out.spatial_attention is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_frames_and_tokens_does_not_change_outputs(variant):
    model, feats, mask, tok, lens, mtok, mlens = model_and_batch(variant)
    # Extra padded steps filled with garbage (and extra padded tokens with real word ids): the masks and
    # lengths must keep them out.
    g = torch.Generator().manual_seed(3)
    feats2 = torch.cat([feats, 5 * torch.randn(3, 4, 7, 7, C, generator=g)], 1)
    mask2 = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], 1)
    tok2 = torch.cat([tok, torch.randint(2, V, (3, 5), generator=g)], 1)
    mtok2 = torch.cat([mtok, torch.randint(2, V, (3, 5, 5), generator=g)], 2)
    for task, (a, la), (b, lb) in [("count", (tok, lens), (tok2, lens)), ("frameqa", (tok, lens), (tok2, lens)),
                                   ("transition", (mtok, mlens), (mtok2, mlens))]:
        o1 = model(task, a, la, mask, features=feats)
        o2 = model(task, b, lb, mask2, features=feats2)
        torch.testing.assert_close(o1.scores, o2.scores, atol=1e-5, rtol=1e-5)
        if o1.temporal_attention is not None:
            torch.testing.assert_close(o1.temporal_attention, o2.temporal_attention[..., :6], atol=1e-6, rtol=1e-5)


def test_batch_neighbours_do_not_leak():
    """A clip scored alone gives the same answer as inside a batch with longer clips."""
    model = make_model("sptp").eval()
    feats, mask = clip_batch()
    tok, lens = questions()
    full = model("count", tok, lens, mask, features=feats).scores
    alone = model("count", tok[2:, :2], lens[2:], mask[2:, :1], features=feats[2:, :1]).scores
    torch.testing.assert_close(full[2:], alone, atol=1e-5, rtol=1e-5)


def test_frames_end_to_end_with_tiny_backbone_and_padding():
    model = make_model("sptp", backbone="tiny").eval()
    g = torch.Generator().manual_seed(4)
    frames = torch.randn(2, 3, 3, 112, 112, generator=g)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    tok, lens = questions(b=2, lengths=(3, 5))
    out = model("count", tok, lens, mask, frames=frames)
    assert out.scores.shape == (2,) and out.spatial_attention.shape == (2, 3, 49)
    frames2 = frames.clone()
    frames2[~mask] = 100.0  # padded frames never reach the backbone
    torch.testing.assert_close(model("count", tok, lens, mask, frames=frames2).scores, out.scores)


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_tasks_shares_clips_and_matches_per_task_forward(variant):
    """A multi-task step (one backbone pass for the clips, questions of every task about them): each
    task's scores and attention equal a forward of that task alone on its own clips."""
    model = make_model(variant).eval()
    feats, mask = clip_batch()
    tok, lens = questions()
    short_tok, short_lens = tok[:2, :4], torch.tensor([4, 2])  # another question length than the others
    short_tok = short_tok.masked_fill(torch.arange(4) >= short_lens[:, None], 0)
    mtok, mlens = questions(mc=True)
    idx = torch.tensor([2, 0, 0])
    inputs = {
        "count": {"tokens": tok, "token_lengths": lens, "clip_index": idx},
        "action": {"tokens": mtok, "token_lengths": mlens, "clip_index": idx},
        "transition": {"tokens": mtok.flip(0), "token_lengths": mlens.flip(0), "clip_index": torch.tensor([1, 1, 2])},
        "frameqa": {"tokens": short_tok, "token_lengths": short_lens, "clip_index": torch.tensor([0, 2])},
    }
    outs = MultiTaskStep(model)(inputs, mask, features=feats)
    assert set(outs) == set(ALL)
    for task, x in inputs.items():
        ci = x["clip_index"]
        direct = model(task, x["tokens"], x["token_lengths"], mask[ci], features=feats[ci])
        torch.testing.assert_close(outs[task].scores, direct.scores, rtol=1e-5, atol=1e-6)
        for name in ("temporal_attention", "spatial_attention"):
            a, b = getattr(outs[task], name), getattr(direct, name)
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert outs["action"].scores.shape == (3, 5) and outs["frameqa"].scores.shape == (2, 7)
    with pytest.raises(ValueError, match="not served"):
        model.forward_tasks({"nope": inputs["count"]}, mask, features=feats)


@pytest.mark.parametrize("task", ALL)
def test_one_step_lowers_the_loss_of_each_head(task):
    model = make_model("sptp")
    feats, mask = clip_batch()
    mc = task in ("action", "transition")
    tok, lens = questions(mc=mc)
    target = {"count": torch.tensor([0, 3, 7]), "frameqa": torch.tensor([2, 5, 3])}.get(task, torch.tensor([4, 0, 2]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = task_loss(task, model(task, tok, lens, mask, features=feats).scores, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses


def test_losses_by_hand():
    scores = torch.tensor([[1.0, 0.5, 3.0, 0.0, 0.2]])
    # gt = 2: margins 1 + s_k - 3 for k != 2 -> all <= 0 except none: sum = 0
    assert float(task_loss("action", scores, torch.tensor([2]))) == 0.0
    # gt = 0: (1+0.5-1) + (1+3-1) + (1+0-1) + (1+0.2-1) = 0.5 + 3 + 0 + 0.2 (the k = gt term is not added)
    assert float(task_loss("action", scores, torch.tensor([0]))) == pytest.approx(3.7)
    # count: target max(y, 1): y=0 -> 1
    assert float(task_loss("count", torch.tensor([1.0, 2.0]), torch.tensor([0, 4]))) == pytest.approx((0 + 4) / 2)
    # frameqa: gold <unk> (1) is ignored
    logits = torch.tensor([[0.0, 0.0, 2.0], [0.0, 9.0, 0.0]])
    expected = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([2]))
    assert float(task_loss("frameqa", logits, torch.tensor([2, 1]))) == pytest.approx(float(expected))
    assert float(task_loss("frameqa", logits, torch.tensor([1, 1]))) == 0.0


def test_fused_and_reference_attention_agree():
    ref = make_model("sptp", impl="reference").eval()
    fused = make_model("sptp", impl="fused").eval()
    fused.load_state_dict(ref.state_dict())
    feats, mask = clip_batch()
    tok, lens = questions()
    a = ref("count", tok, lens, mask, features=feats)
    b = fused("count", tok, lens, mask, features=feats)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.spatial_attention, b.spatial_attention, atol=1e-5, rtol=1e-5)


def test_bad_input_is_named():
    model = make_model("tp").eval()
    feats, mask = clip_batch()
    tok, lens = questions()
    with pytest.raises(ValueError, match="not served"):
        STVQA(ModelConfig(variant="tp", tasks=["count"], vocab_size=V, feature_dim=C))(
            "frameqa", tok, lens, mask, features=feats)
    with pytest.raises(ValueError, match=r"\[B, 5, L\]"):
        model("action", tok, lens, mask, features=feats)
    with pytest.raises(ValueError, match="at least one real frame"):
        model("count", tok, lens, torch.zeros_like(mask), features=feats)
    with pytest.raises(ValueError, match="exactly one of features or frames"):
        model("count", tok, lens, mask)
    with pytest.raises(ValueError, match="unknown variant"):
        ModelConfig(variant="spatial", tasks=["count"], vocab_size=V, feature_dim=C)
    with pytest.raises(ValueError, match="num_answers"):
        ModelConfig(variant="tp", tasks=["frameqa"], vocab_size=V, feature_dim=C)
    with pytest.raises(ValueError, match="unknown model config field"):
        ModelConfig.from_dict({"variant": "tp", "tasks": ["count"], "vocab_size": 3, "feature_dim": 2, "x": 1})


def test_attended_position_lets_the_model_see_where_it_looked():
    """Plain ST-VQA pools the attended cells' features, so moving an object to another cell changes
    nothing; with attended_position the video LSTM also reads where attention looked."""
    plain = make_model("sptp").eval()
    torch.manual_seed(0)
    model = STVQA(ModelConfig.from_dict(dict(plain.config.to_dict(), attended_position=True))).eval()
    assert model.video_lstm.layers[0].input_size == C + 2
    _, mask = clip_batch()
    tok, lens = questions()
    obj = torch.randn(C)
    left, right = torch.zeros(3, 6, 7, 7, C), torch.zeros(3, 6, 7, 7, C)
    left[:, :, 3, 1], right[:, :, 3, 5] = obj, obj
    torch.testing.assert_close(plain("frameqa", tok, lens, mask, features=left).scores,
                               plain("frameqa", tok, lens, mask, features=right).scores)
    assert not torch.allclose(model("frameqa", tok, lens, mask, features=left).scores,
                              model("frameqa", tok, lens, mask, features=right).scores)
    with pytest.raises(ValueError, match="attended_position needs spatial attention"):
        ModelConfig(variant="tp", tasks=["count"], vocab_size=V, feature_dim=C, attended_position=True)
    with pytest.raises(ValueError, match="7x7 feature maps"):
        model("count", tok, lens, mask, features=torch.zeros(3, 6, 5, 5, C))


def test_question_gate_lets_the_question_choose_what_the_video_lstm_reads():
    """With the gate fully open the model is plain ST-VQA; a closed channel no longer reaches the answer."""
    plain = make_model("sptp").eval()
    model = STVQA(ModelConfig.from_dict(dict(plain.config.to_dict(), question_gate=True))).eval()
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["question_gate.bias", "question_gate.weight"]
    _, mask = clip_batch()
    tok, lens = questions()
    # Every cell alike: attention stays uniform whatever one channel does, so only the gate decides.
    feats = torch.randn(3, 6, 1, 1, C, generator=torch.Generator().manual_seed(3)).expand(3, 6, 7, 7, C).clone()
    bumped = feats.clone()
    bumped[..., 0] += 2.0
    with torch.no_grad():
        model.question_gate.weight.zero_()
        model.question_gate.bias.fill_(40.0)
    torch.testing.assert_close(model("count", tok, lens, mask, features=feats).scores,
                               plain("count", tok, lens, mask, features=feats).scores)
    assert not torch.allclose(plain("count", tok, lens, mask, features=feats).scores,
                              plain("count", tok, lens, mask, features=bumped).scores)
    with torch.no_grad():
        model.question_gate.bias[0] = -40.0
    torch.testing.assert_close(model("count", tok, lens, mask, features=feats).scores,
                               model("count", tok, lens, mask, features=bumped).scores)
    with pytest.raises(ValueError, match="question_gate needs spatial attention"):
        ModelConfig(variant="concat", tasks=["count"], vocab_size=V, feature_dim=C, question_gate=True)


def test_attended_position_learns_a_location_question():
    """'Where is the object?' (left/top/right/bottom) is learnable with attended_position, not without."""
    g = torch.Generator().manual_seed(5)
    zones = [(3, 1), (1, 3), (3, 5), (5, 3)]
    obj = torch.randn(C, generator=g)

    def batch(n: int):
        answer = torch.randint(0, 4, (n,), generator=g)
        feats = 0.1 * torch.randn(n, 2, 7, 7, C, generator=g)
        for i, a in enumerate(answer.tolist()):
            feats[i, :, zones[a][0], zones[a][1]] += obj
        tok = torch.full((n, 3), 5)
        return feats, torch.ones(n, 2, dtype=torch.bool), tok, torch.full((n,), 3), answer + 2  # 0/1: pad/unk

    accuracy = {}
    for where in (False, True):
        torch.manual_seed(0)
        model = STVQA(ModelConfig(variant="sp", tasks=["frameqa"], vocab_size=V, feature_dim=C, num_answers=6,
                                  embed_dim=8, hidden_dim=H, att_hidden_dim=8, dropout=0.0,
                                  attention_impl="reference", attended_position=where))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(400):
            feats, mask, tok, lens, y = batch(32)
            loss = task_loss("frameqa", model("frameqa", tok, lens, mask, features=feats).scores, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        feats, mask, tok, lens, y = batch(200)
        with torch.no_grad():
            pred = model.eval()("frameqa", tok, lens, mask, features=feats).scores.argmax(-1)
        accuracy[where] = float((pred == y).float().mean())
    assert accuracy[True] > 0.9 and accuracy[False] < 0.5, accuracy
