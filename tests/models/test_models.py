import pytest
import torch
import torchvision

from pointseg.models import MODELS, build_model, load_encoder_weights
from pointseg.models.segmentation import IMAGENET_MEAN, expand_decoder_state
from pointseg.models.smp_unet import adapt_input_channels, smp_unet
from tests.conftest import shared_path


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_forward_finite_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5)
    x = torch.rand(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 5, 64, 64) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_unet_small_is_the_300k_reference_size():
    n = sum(p.numel() for p in build_model("unet-small", 7).parameters())
    assert 250_000 < n < 350_000


def test_unknown_model_lists_valid_names():
    with pytest.raises(KeyError, match="unet-small"):
        build_model("segformer", 7)


def test_mobilenet_v2_imagenet_file_loads_into_the_unet_encoder():
    path = shared_path("weights", "mobilenet_v2-b0353104.pth")
    model = build_model("unet-mobilenetv2", 7, encoder_weights=str(path))
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(path, weights_only=True))
    ours = model.encoder.state_dict()
    for key, value in reference.features.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(ours[f"features.{key}"], value), key


@pytest.mark.parametrize("name, file", [("unet-efficientnet-lite0", "efficientnet-lite0-57934424.pth"),
                                        ("unet-efficientnet-lite2", "efficientnet-lite2-9656183e.pth")])
def test_efficientnet_lite_files_load_by_tensor_order(name, file):
    path = shared_path("weights", file)
    model = build_model(name, 7, encoder_weights=str(path))
    given = [v for k, v in torch.load(path, weights_only=True).items() if not k.endswith("num_batches_tracked")]
    ours = [v for k, v in model.encoder.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert all(torch.equal(ours[i], given[i]) for i in (0, 1, len(ours) // 2, len(ours) - 1))


def test_weights_that_do_not_fit_are_an_error(tmp_path):
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="do not fit this encoder"):
        smp_unet(3, "mobilenet_v2", str(tmp_path / "bad.pth"))
    (tmp_path / "corrupt.pth").write_bytes(b"\x00garbage")
    model = smp_unet(3, "mobilenet_v2", None)
    with pytest.raises(ValueError, match="cannot read encoder weights"):
        load_encoder_weights(model.encoder, tmp_path / "corrupt.pth")
    with pytest.raises(FileNotFoundError):
        smp_unet(3, "mobilenet_v2", str(tmp_path / "missing.pth"))


def test_offline_hub_name_fails_at_once_with_a_hint_to_pass_a_file(offline, without_weights_package):
    import time

    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="encoder_weights=/path/to/weights.pth"):
        build_model("unet-mobilenetv2", 7, encoder_weights="imagenet")
    assert time.perf_counter() - started < 10  # not the hub client's retries


@pytest.mark.parametrize("name", sorted(MODELS))
def test_encode_then_decode_is_forward(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4).eval()
    x = torch.rand(1, 3, 64, 64)
    features = model.encode(x)
    assert [f.shape[1] for f in features] == list(model.feature_channels)
    assert torch.allclose(model.decode(features), model(x))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("bands", [1, 10])
def test_every_model_takes_any_number_of_bands(name, bands):
    model = build_model(name, num_classes=3, in_channels=bands)
    assert model.in_channels == bands and model.mean.shape == (1, bands, 1, 1)
    assert model.eval()(torch.rand(1, bands, 32, 32)).shape == (1, 3, 32, 32)


def test_a_pretrained_rgb_input_layer_is_adapted_so_repeated_rgb_bands_act_as_rgb():
    rgb = torch.randn(8, 3, 3, 3)
    six = adapt_input_channels(rgb, torch.Size([8, 6, 3, 3]))
    assert torch.equal(six[:, 3:], six[:, :3]) and torch.allclose(six[:, :3], rgb / 2)
    x = torch.rand(1, 3, 9, 9)
    same = torch.nn.functional.conv2d(x.repeat(1, 2, 1, 1), six)  # bands R, G, B, R, G, B
    assert torch.allclose(same, torch.nn.functional.conv2d(x, rgb), atol=1e-5)
    assert torch.allclose(adapt_input_channels(rgb, torch.Size([8, 1, 3, 3])), rgb.sum(1, keepdim=True))
    other = torch.randn(8, 1, 3, 3)  # a depthwise layer: not an RGB input layer
    assert adapt_input_channels(other, torch.Size([8, 4, 3, 3])) is other


@pytest.mark.parametrize("name, file", [("unet-mobilenetv2", "mobilenet_v2-b0353104.pth"),
                                        ("unet-efficientnet-lite0", "efficientnet-lite0-57934424.pth")])
def test_imagenet_files_load_into_ten_band_encoders(name, file):
    path = shared_path("weights", file)
    model = build_model(name, 7, encoder_weights=str(path), in_channels=10)
    rgb = build_model(name, 7, encoder_weights=str(path))
    first, first_rgb = (next(iter(m.encoder.state_dict().values())) for m in (model, rgb))
    assert first.shape[1] == 10 and torch.allclose(first[:, 3:6], first_rgb * 3 / 10)
    later = [k for k in rgb.encoder.state_dict() if "weight" in k][5]
    assert torch.equal(model.encoder.state_dict()[later], rgb.encoder.state_dict()[later])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_named_heads_share_encoder_and_decoder_and_only_the_used_head_gets_a_gradient(name):
    torch.manual_seed(0)
    model = build_model(name, {"loveda": 7, "dubai": 6})
    x = torch.rand(1, 3, 64, 64)
    assert model.head_names == ["loveda", "dubai"] and model.num_classes("dubai") == 6
    assert model(x, "loveda").shape == (1, 7, 64, 64)
    model(x, "dubai").square().mean().backward()
    assert all(p.grad is None for p in model.heads["loveda"].parameters())
    assert all(p.grad is not None for p in model.heads["dubai"].parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    with pytest.raises(ValueError, match="name one"):
        model(x)
    with pytest.raises(KeyError, match="valid: \\['loveda', 'dubai'\\]"):
        model(x, "isprs")


@pytest.mark.parametrize("name", ["unet-small", "vit-tiny"])
def test_a_decoder_per_dataset_starts_as_the_shared_one_and_learns_and_normalises_from_its_dataset_alone(name):
    torch.manual_seed(0)
    shared = build_model(name, {"loveda": 7, "dubai": 6})
    torch.manual_seed(0)
    model = build_model(name, {"loveda": 7, "dubai": 6}, decoder_per_dataset=True)
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(model.eval()(x, "dubai"), shared.eval()(x, "dubai"))  # same weights, no random draws
    decoder_size = sum(p.numel() for p in shared.decoder.parameters())
    assert model.parameter_counts()["total"] == shared.parameter_counts()["total"] + decoder_size
    assert model.dataset_parameters("dubai") == shared.dataset_parameters("dubai") + decoder_size
    before = {k: v.clone() for k, v in model.decoder["loveda"].state_dict().items() if "running" in k}
    model.train()(x, "dubai").square().mean().backward()
    assert all(p.grad is None for p in model.decoder["loveda"].parameters())
    assert all(p.grad is not None for p in model.decoder["dubai"].parameters())
    after = model.decoder["loveda"].state_dict()
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())  # dubai batches leave them alone
    assert not torch.equal(model.decoder["dubai"].state_dict()[next(iter(before))], before[next(iter(before))])
    added = model.add_head("isprs", 6)
    first, copied = (next(iter(model.decoder[n].state_dict().values())) for n in ("loveda", "isprs"))
    assert added[-1] is model.decoder["isprs"] and torch.equal(copied, first)
    model.keep_heads(["dubai"])
    assert list(model.decoder) == ["dubai"] and model.eval()(x).shape == (2, 6, 64, 64)


def test_a_shared_decoders_weights_become_every_datasets_decoder():
    heads = {"loveda": 7, "dubai": 6}
    shared = build_model("unet-small", heads).eval()
    model = build_model("unet-small", heads, decoder_per_dataset=True).eval()
    model.load_state_dict(expand_decoder_state(shared.state_dict(), model))  # strict: every decoder filled
    x = torch.rand(2, 3, 64, 64)
    for name in heads:
        assert torch.equal(model(x, name), shared(x, name))
    own = model.state_dict()
    assert expand_decoder_state(own, model) is own  # already one decoder per dataset


def test_a_head_added_later_is_built_like_the_first():
    model = build_model("unet-mobilenetv2", 7)
    (head,) = model.add_head("dubai", 6)  # no experts in a U-Net: the head alone
    assert type(head) is type(model.heads["seg"]) and model.num_classes("dubai") == 6
    assert model.eval()(torch.rand(1, 3, 32, 32), "dubai").shape == (1, 6, 32, 32)
    with pytest.raises(ValueError, match="already has a head"):
        model.add_head("dubai", 6)


@pytest.mark.parametrize("name", ["unet-small", "unet-mobilenetv2"])
def test_a_model_saved_before_named_heads_loads_into_the_same_weights(name):
    """Model files and checkpoints written before the encoder/decoder/heads contract named parameters ``net.*``:
    ``net.encoder``/``net.decoder``/``net.segmentation_head`` (smp) or ``net.down``/``net.up``/``net.fuse``/
    ``net.head`` (unet-small)."""
    old_names = {"encoder.": "net.encoder.", "decoder.": "net.decoder.", "heads.seg.": "net.segmentation_head."}
    if name == "unet-small":
        old_names = {"encoder.down.": "net.down.", "decoder.up.": "net.up.", "decoder.fuse.": "net.fuse.",
                     "heads.seg.": "net.head."}
    torch.manual_seed(0)
    saved = build_model(name, 7).state_dict()
    old = {}
    for key, value in saved.items():
        prefix = next(p for p in old_names if key.startswith(p))
        old[old_names[prefix] + key[len(prefix):]] = value
    torch.manual_seed(1)
    model = build_model(name, 7)
    model.load_state_dict(old)  # strict: every parameter found under its new name
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


def test_auxiliary_losses_of_modules_are_summed_for_the_trainer():
    model = build_model("unet-small", 3)
    assert model.pop_auxiliary_loss() is None
    model.encoder.down[0].aux_loss = torch.tensor(0.25)
    model.decoder.fuse[0].aux_loss = torch.tensor(0.5)
    assert model.pop_auxiliary_loss().item() == 0.75
    assert model.pop_auxiliary_loss() is None  # popped: the next step starts from none


def test_the_vit_stem_is_torchvisions_mobilenet_v2_to_stride_16_with_its_imagenet_weights():
    path = shared_path("weights", "mobilenet_v2-b0353104.pth")
    model = build_model("vit-tiny-mobilenetv2", 7, encoder_weights=str(path)).eval()
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(path, weights_only=True))
    x = torch.rand(2, 3, 64, 96)
    assert torch.equal(model.encoder.stem(x), reference.eval().features[:14](x))
    assert [tuple(m.shape) for m in model.encode(x)] == [(2, 192, 4, 6)] * 4  # one token per stem cell
    assert model.size_divisor == 16
    assert torch.allclose(model.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    ten = build_model("vit-tiny-mobilenetv2", 7, encoder_weights=str(path), in_channels=10)
    first = ten.encoder.stem.features[0][0].weight
    assert first.shape[1] == 10 and torch.allclose(first[:, 3:6], reference.features[0][0].weight * 3 / 10)


def test_the_vit_stem_takes_a_mobilenet_v2_file_or_imagenet_and_says_what_fails(tmp_path, monkeypatch,
                                                                               without_weights_package):
    with pytest.raises(ValueError, match="MobileNetV2 checkpoint file, imagenet or null"):
        build_model("vit-tiny-mobilenetv2", 7, encoder_weights="swsl")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_model("vit-tiny-mobilenetv2", 7, encoder_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="do not fit this encoder"):
        build_model("vit-tiny-mobilenetv2", 7, encoder_weights=str(shared_path("weights",
                                                                               "efficientnet-lite0-57934424.pth")))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="encoder_weights=/path/to/mobilenet_v2.pth"):
        build_model("vit-tiny-mobilenetv2", 7, encoder_weights="imagenet")
