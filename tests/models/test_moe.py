"""Mixture-of-Experts FFNs (S5's MoE-MDF) and the ViT that takes them as its FFN class."""

import pytest
import torch
from timm.layers import Mlp

from pointseg.models import build_model
from pointseg.models.layers.moe import MoEFFN, expert_width, set_route
from pointseg.models.vit import ViTEncoder, expand_ffn_state

MOE = {"moe_part": 0.25, "moe_gate": "hard", "moe_top_k": 1, "moe_experts": None, "moe_balance_weight": 0.01}


def test_one_expert_without_a_shared_part_is_the_plain_ffn():
    torch.manual_seed(0)
    mlp = Mlp(16, 64)
    moe = MoEFFN(16, 64, experts=["only"], part=16)
    assert moe.shared is None
    moe.fc1.load_state_dict(mlp.fc1.state_dict())
    moe.experts["only"].load_state_dict(mlp.fc2.state_dict())
    x = torch.randn(2, 5, 16)
    assert torch.equal(moe(x), mlp(x))


def test_experts_started_from_a_pretrained_ffn_compute_it_for_every_dataset():
    torch.manual_seed(0)
    mlp = Mlp(16, 64)
    moe = MoEFFN.from_mlp(mlp, ["a", "b"], part=0.25)
    assert moe.part == 4 and moe.shared.out_features == 12
    x = torch.randn(3, 16)
    for dataset in ("a", "b"):
        moe.route = dataset
        assert torch.allclose(moe(x), mlp(x), atol=1e-6)


def test_hard_routing_sends_each_dataset_to_its_expert_and_no_gradient_to_the_others():
    torch.manual_seed(0)
    moe = MoEFFN(8, 32, experts=["a", "b"], part=2)
    x = torch.randn(4, 8)
    set_route(moe, "b")
    out = moe(x)
    h = moe.act(moe.fc1(x))
    assert torch.equal(out[:, :6], moe.shared(h)) and torch.equal(out[:, 6:], moe.experts["b"](h))
    out.square().sum().backward()
    assert all(p.grad is None for p in moe.experts["a"].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in moe.experts["b"].parameters())
    set_route(moe, None)
    with pytest.raises(RuntimeError, match="set the dataset"):
        moe(x)


def test_in_a_model_the_head_name_routes_the_experts():
    torch.manual_seed(0)
    model = build_model("vit-tiny", {"loveda": 7, "dubai": 6}, ffn=MOE)
    model(torch.rand(1, 3, 32, 32), "dubai").mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if ".experts.loveda." in n or n.startswith("heads.loveda"))
    assert all(g is not None for n, g in grads.items() if ".experts.dubai." in n)
    assert model.dataset_parameters("dubai") == 12 * (768 * 48 + 48) + 64 * 6 + 6  # 12 blocks: fc2 rows; head


@pytest.mark.parametrize("part, width, expected", [(48, 192, 48), (0.25, 192, 48), (1, 192, 1), (0.001, 192, 1)])
def test_the_expert_part_is_absolute_or_a_ratio_of_the_width(part, width, expected):
    assert expert_width(part, width) == expected


@pytest.mark.parametrize("part", [0, -0.5, 1.5, 193])
def test_a_bad_expert_part_is_an_error(part):
    with pytest.raises(ValueError, match="part"):
        expert_width(part, 192)


def test_the_learned_gate_mixes_the_top_k_experts_and_adds_the_load_balancing_loss():
    torch.manual_seed(0)
    moe = MoEFFN(8, 16, experts=["e0", "e1", "e2"], part=4, gate="learned", top_k=2, balance_weight=0.1).train()
    x = torch.randn(10, 8)
    out = moe(x)
    probs = moe.gate(x).softmax(-1)
    h = moe.act(moe.fc1(x))
    expected = []
    for i in range(len(x)):
        w, idx = probs[i].topk(2)
        w = w / w.sum()
        expected.append(sum(w[j] * list(moe.experts.values())[idx[j]](h[i]) for j in range(2)))
    assert torch.allclose(out[:, 4:], torch.stack(expected), atol=1e-6)
    share = torch.nn.functional.one_hot(probs.argmax(-1), 3).float().mean(0)
    assert moe.aux_loss.item() == pytest.approx(0.1 * 3 * (share * probs.mean(0)).sum().item(), rel=1e-5)
    moe(x)
    assert moe.aux_loss.item() == pytest.approx(2 * 0.1 * 3 * (share * probs.mean(0)).sum().item(), rel=1e-5)


def test_a_plain_vit_checkpoint_loads_into_the_moe_vit_and_computes_the_same():
    torch.manual_seed(0)
    plain = ViTEncoder(embed_dim=32, depth=2, num_heads=2, levels=2).eval()
    from functools import partial

    moe = ViTEncoder(embed_dim=32, depth=2, num_heads=2, levels=2,
                     ffn=partial(MoEFFN, experts=["a", "b"], part=8)).eval()
    assert moe.routed and not plain.routed
    moe.load_state_dict(expand_ffn_state(plain.state_dict(), moe))
    x = torch.rand(1, 3, 32, 48)
    for dataset in ("a", "b"):
        assert all(torch.allclose(f, g, atol=1e-5) for f, g in zip(moe(x, dataset), plain(x), strict=True))


def test_a_dataset_added_to_a_trained_moe_model_gets_a_head_and_an_expert_in_every_block():
    torch.manual_seed(0)
    model = build_model("vit-tiny", {"loveda": 7}, ffn=MOE).eval()
    new = model.add_head("dubai", 6)
    assert len(new) == 1 + 12  # the head and one expert per block
    x = torch.rand(1, 3, 32, 32)
    assert all(torch.equal(f, g) for f, g in zip(model.encode(x, "dubai"), model.encode(x, "loveda"), strict=True))
    assert model(x, "dubai").shape == (1, 6, 32, 32)
