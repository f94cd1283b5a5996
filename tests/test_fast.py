"""The fast path (hydralanet.inference.fast), tiled inference (hydralanet.inference.tiling) and the benchmark script.

Speed is not asserted here (the benchmark prints it); these tests check that being fast
changes nothing that matters: outputs, masks, tiling arithmetic, and the benchmark's report.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks import speed as benchmark
from hydralanet import HydraLANet, load_model, predict
from hydralanet.config import PreprocessConfig
from hydralanet.inference.device import cpu_has_native_bf16, resolve_precision
from hydralanet.inference.fast import InferenceModel, fold_batchnorm, optimize_for_inference
from hydralanet.inference.forward import run_model
from hydralanet.inference.tiling import blend_ramp, run_tiled, tile_starts
from hydralanet.preprocessing import preprocess


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters (fresh ones are the identity)."""
    g = torch.Generator().manual_seed(seed)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / max(1, int(a.sum() + b.sum())))


@pytest.fixture(scope="module")
def small_photo(retina) -> np.ndarray:
    """The retina photo at 400 x 400: native-resolution tiling stays quick on it."""
    import cv2

    return cv2.resize(retina, (400, 400), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def trained_tiny(retina):
    """A resnet18/D=8 model trained for 60 steps to find bright-green, dark-red, bright-red and
    bright-blue regions of the retina photo at 64 px: smooth, confident outputs like a trained
    model's. (Random weights are no test of precision: deep random nets are chaotic, so any
    rounding flips their masks.)"""
    torch.manual_seed(0)
    x = preprocess(retina, PreprocessConfig(input_size=64, clahe="off")).tensor[None]
    r, g, b = x[0]
    target = torch.stack([g > g.quantile(0.75), r < r.quantile(0.3), r > r.quantile(0.75), b > b.quantile(0.7)])
    model = HydraLANet(encoder="resnet18", decoder_channels=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster and immune to a busy CPU
    try:
        for _ in range(60):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), target[None].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval(), x


# --------------------------------------------------------------------------- fast path


@pytest.mark.parametrize("encoder", ["resnet18", "resnet50"])  # BasicBlock and Bottleneck
def test_batchnorm_folding_is_exact_in_fp32(encoder):
    model = _randomise_batchnorm(HydraLANet(encoder=encoder, decoder_channels=16)).eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())  # every BN follows a conv
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert ref.abs().max() > 0.1  # the outputs are not trivially flat
    assert (ref - out).abs().max() < 1e-4


@pytest.mark.parametrize("batch", [1, 3])  # one weight per image when the gates are folded
def test_gate_folding_and_fused_head_are_exact_in_fp32(batch):
    model = _randomise_batchnorm(HydraLANet(encoder="resnet18", decoder_channels=16), seed=1).eval()
    torch.manual_seed(1)
    for branch in model.head.branches.values():  # a random head is near-flat at its -2 bias; spread it
        nn.init.normal_(branch[2].weight, std=3.0)
    fast = optimize_for_inference(model, "cpu", "fp32")
    kinds = {name: type(m).__name__ for name, m in fast.net.named_children()}
    assert {kinds[n] for n in ("ffb2", "ffb3", "ffb4")} == {"FastFFB"}
    assert {kinds[n] for n in ("lam2", "lam3", "lam4", "lam5")} == {"FastLAM"} and kinds["head"] == "FusedHydraHead"
    x = torch.randn(batch, 3, 96, 128)
    with torch.inference_mode():
        ref, out = model(x), fast(x)
        single = fast(x[-1:])
    spread = float(ref.std(dim=(0, 2, 3)).min())
    assert spread > 1e-3  # not trivially flat
    assert (ref - out).abs().max() < 1e-3 * spread  # fp32 rounding only
    assert (single - out[-1:]).abs().max() < 1e-3 * spread  # image i is scaled by its own gates


def test_narrow_decoders_stay_fp32_under_bf16():
    narrow = optimize_for_inference(HydraLANet(encoder="resnet18", decoder_channels=16).eval(), "cpu", "bf16")
    wide = optimize_for_inference(HydraLANet(encoder="resnet18", decoder_channels=64).eval(), "cpu", "bf16")
    assert narrow.bf16_parts == "encoder" and wide.bf16_parts == "all"
    assert {p.dtype for p in narrow.net.encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for n, p in narrow.net.named_parameters() if not n.startswith("encoder.")} == {torch.float32}
    assert {p.dtype for n, p in wide.net.named_parameters() if not n.startswith("head.out")} == {torch.bfloat16}
    with torch.inference_mode():
        assert narrow(torch.randn(1, 3, 64, 64)).dtype == torch.float32


def test_fast_path_masks_agree_with_fp32(trained_tiny):
    model, x = trained_tiny
    with torch.inference_mode():
        exact = torch.sigmoid(model(x))[0]
    assert all(exact[c].max() - exact[c].min() > 0.5 for c in range(4))  # it learned all four
    fast = run_model(optimize_for_inference(model, "cpu", "bf16"), x, precision="bf16")[0]
    folded = run_model(optimize_for_inference(model, "cpu", "fp32"), x)[0]
    for c in range(4):
        reference = exact[c] >= 0.5
        assert 0.05 < reference.float().mean() < 0.5
        assert dice(reference, fast[c] >= 0.5) >= 0.98, c
    assert (fast - exact).abs().max() < 0.1
    assert (folded - exact).abs().max() < 1e-4


def test_plain_model_under_autocast_still_works(trained_tiny):
    """run_model keeps autocast for plain models (other callers pass precision='bf16')."""
    model, x = trained_tiny
    exact = run_model(model, x)[0]
    autocast = run_model(model, x, precision="bf16")[0]
    assert dice(exact[0] >= 0.5, autocast[0] >= 0.5) >= 0.98


def test_loaded_model_builds_the_fast_model_once(tiny_checkpoint, retina):
    loaded = load_model(tiny_checkpoint, device="cpu")
    assert loaded.inference_model("fp32") is loaded.model  # the exact path is the plain model
    fast = loaded.inference_model("auto")
    assert isinstance(fast, InferenceModel) and loaded.inference_model("auto") is fast
    assert fast.precision == resolve_precision("auto", torch.device("cpu"))
    assert any(isinstance(m, nn.BatchNorm2d) for m in loaded.model.modules())
    prediction = predict(loaded, retina)
    assert prediction.settings["precision"] == fast.precision and prediction.settings["tile"] is None


def test_compile_failure_falls_back_to_the_eager_fast_path(trained_tiny, monkeypatch, caplog):
    """Without a C++ compiler (a slim container) inductor fails; the fast path must still run."""
    import torch._inductor.config as inductor

    model, x = trained_tiny
    monkeypatch.setattr(inductor, "fx_graph_cache", False)
    monkeypatch.setattr(inductor.cpp, "cxx", (None, "/nonexistent/g++"))
    torch._dynamo.reset()
    fast = optimize_for_inference(model, "cpu", "bf16", compile=True)
    eager = optimize_for_inference(model, "cpu", "bf16")
    with torch.inference_mode():
        out = fast(x)
        assert fast.compiled is None and "torch.compile failed" in caplog.text
        assert torch.equal(out, eager(x))
    torch._dynamo.reset()


def test_cpu_bf16_detection_asks_the_cpu(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True, "avx512_bf16": False})
    assert not cpu_has_native_bf16()  # AVX-512 alone: oneDNN emulates bf16, slower than fp32
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True, "avx512_bf16": True})
    assert cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True})
    assert cpu_has_native_bf16()
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="precision='fp16' needs a CUDA GPU"):
        resolve_precision("fp16", torch.device("cpu"))  # it crashed deep inside the convolution before
    with pytest.raises(ValueError, match="precision='int8' is not supported"):
        resolve_precision("int8", torch.device("cpu"))


# --------------------------------------------------------------------------- tiling


class LocalModel(nn.Module):
    """Three 3x3 convolutions: every output pixel depends on a 7 x 7 neighbourhood only, so
    tiles that overlap enough must reproduce the whole-image result."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(8, 4, 3, padding=1),
        )
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return 4 * self.net(x)


def test_tile_grid_and_weights():
    assert tile_starts(2848, 1024, 256) == [0, 768, 1536, 1824]
    assert tile_starts(1024, 1024, 256) == [0] and tile_starts(512, 1024, 256) == [0]
    starts = tile_starts(416, 128, 32)
    assert starts[0] == 0 and starts[-1] == 416 - 128
    assert all(0 < b - a <= 128 - 32 for a, b in zip(starts, starts[1:]))  # overlap >= 32, no gaps
    w = blend_ramp(96, 128, 416, 32)
    assert w.min() > 0 and w.max() == 1 and w[0] < 0.01 and w[-1] < 0.01 and w[64] == 1
    assert torch.equal(blend_ramp(0, 128, 416, 32)[:32], torch.ones(32))  # the square's edge: no ramp


def test_overlapping_tiles_reproduce_a_local_model():
    x = torch.randn(3, 160, 160)
    model = LocalModel()
    whole = run_model(model, x[None])[0]
    tiled = run_tiled(model, x, np.ones((160, 160), bool), tile=64, overlap=32)
    assert tiled.tiles_run == len(tile_starts(160, 64, 32)) ** 2 and tiled.tiles_skipped == 0
    diff = (tiled.probabilities - whole).abs()
    # A tile is wrong (zero padding) only within 3 px of an edge that is not the square's edge;
    # everywhere else the blend mixes exact values, and near those edges the wrong tile's
    # raised-cosine weight is under 2 %.
    starts = tile_starts(160, 64, 32)
    near_edge = torch.zeros(160, dtype=torch.bool)
    for s in starts:
        if s > 0:
            near_edge[s : s + 3] = True
        if s + 64 < 160:
            near_edge[s + 61 : s + 64] = True
    exact = ~near_edge[:, None] & ~near_edge[None, :]
    assert diff[:, exact].max() < 1e-5
    assert diff.max() < 0.02


def test_tiles_outside_the_field_of_view_are_skipped():
    x = torch.randn(3, 128, 128)
    fov = np.zeros((128, 128), bool)
    fov[10:40, 20:50] = True  # inside the top-left tile only
    model = LocalModel()
    tiled = run_tiled(model, x, fov, tile=64, overlap=0)
    assert (tiled.tiles_run, tiled.tiles_skipped, model.calls) == (1, 3, 1)
    assert tiled.probabilities[:, 64:, :].abs().max() == 0 and tiled.probabilities[:, :, 64:].abs().max() == 0
    expected = run_model(model, x[None, :, :64, :64])[0]
    assert torch.allclose(tiled.probabilities[:, :64, :64], expected, atol=1e-6)
    with pytest.raises(ValueError, match="tile must be a multiple of 32"):
        run_tiled(model, x, fov, tile=100)


def test_one_tile_over_the_whole_square_equals_untiled(tiny_checkpoint, retina):
    loaded = load_model(tiny_checkpoint, device="cpu")
    size = loaded.config.preprocessing.input_size
    whole = predict(loaded, retina, precision="fp32")
    tiled = predict(loaded, retina, precision="fp32", tile=size, scale=1.0)
    assert tiled.settings["tiles_run"] == 1 and tiled.settings["input_size"] == size
    assert np.allclose(tiled.probabilities, whole.probabilities, atol=1e-6)


def test_native_resolution_tiling_on_a_photo(tiny_checkpoint, small_photo):
    loaded = load_model(tiny_checkpoint, device="cpu")
    prediction = predict(loaded, small_photo, tile=128)
    side = prediction.settings["input_size"]
    assert side % 32 == 0 and abs(side - prediction.geometry.side) <= 16  # the photo's own FOV side
    assert (
        prediction.settings["tiles_run"] + prediction.settings["tiles_skipped"] == len(tile_starts(side, 128, 32)) ** 2
    )
    assert prediction.probabilities.shape == (4, 400, 400)
    assert prediction.probabilities[:, ~prediction.fov].max() == 0


def test_cli_tile_flag(tiny_checkpoint, small_photo, tmp_path):
    import cv2

    from hydralanet.cli import main

    cv2.imwrite(str(tmp_path / "eye.png"), cv2.cvtColor(small_photo, cv2.COLOR_RGB2BGR))
    assert (
        main(
            [
                "predict",
                str(tmp_path / "eye.png"),
                "--out",
                str(tmp_path / "out"),
                "--model",
                str(tiny_checkpoint),
                "--tile",
                "128",
            ]
        )
        == 0
    )
    assert cv2.imread(str(tmp_path / "out" / "eye" / "EX.png")).shape[:2] == (400, 400)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["tile"] == 128
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "eye.png"), "--out", str(tmp_path / "o2"), "--tile", "100"])


# --------------------------------------------------------------------------- benchmark


def test_benchmark_quick_json(tiny_checkpoint, small_photo, tmp_path, capsys, monkeypatch):
    """The report's figures from known timings: the matmul peaks (fp32 200 then 300 GFLOP/s,
    bf16 400 then 500; the best is kept) and each path's runs (baseline 0.5, 0.4, 0.3 s; fast
    0.1, 0.3, 0.2 s: medians 0.4 and 0.2, a speedup of 2). Each path still runs once."""
    import cv2

    peaks = iter([200.0, 400.0, 300.0, 500.0])  # float32, bfloat16 at the start, then again at the end
    monkeypatch.setattr(benchmark, "matmul_peak", lambda dtype, sizes, repeats: next(peaks))
    runs = {"baseline": [0.5, 0.4, 0.3], "fast": [0.1, 0.3, 0.2]}

    def known_medians(paths, repeats):
        for fn in paths.values():
            fn()
        return {name: runs[name] for name in paths}

    monkeypatch.setattr(benchmark, "interleaved_medians", known_medians)
    # Peak memory comes from child interpreters (measured for real in the next test): here each
    # call is recorded and answered with figures that name it.
    memory_calls = []

    def known_memory(spec, path, photo=None):
        memory_calls.append((spec["kind"], path, photo))
        return {"runtime_mib": 1.0, "model_mib": 2.0, "peak_mib": 3.0 + len(memory_calls)}

    monkeypatch.setattr(benchmark, "peak_memory", known_memory)
    out, photo = tmp_path / "bench.json", tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(small_photo, cv2.COLOR_RGB2BGR))
    assert (
        benchmark.main(
            [
                "--quick",
                "--model",
                str(tiny_checkpoint),
                "--photo",
                "400x300",
                "--json",
                str(out),
                "--image",
                "retina",
                str(photo),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["image"] == ["retina", str(photo)]
    assert set(report["models"]) == {"published", "checkpoint"}
    assert report["peak_bf16_gflops"] == 500.0 and report["peak_fp32_gflops"] == 300.0
    assert report["peak_fp32_runs"] == [200, 300]
    for r in report["models"].values():
        assert (r["baseline_s"], r["fast_s"], r["speedup"]) == (0.4, 0.2, 2.0)
        assert r["baseline_runs_s"] == runs["baseline"] and r["fast_runs_s"] == runs["fast"]
        assert r["peak_bf16_gflops"] == 500.0
        assert r["fast_gflops"] == pytest.approx(5 * r["gflop"]) and r["baseline_gflops"] == pytest.approx(
            2.5 * r["gflop"]
        )
        assert r["bound_s"] == pytest.approx(r["gflop"] / 500) and r["bound_ratio"] == pytest.approx(100 / r["gflop"])
        assert 0.0 <= r["dice_min"] <= 1.0 and 0.0 <= r["dice_min_matched"] <= 1.0
        agreement = r["agreement"]
        assert set(agreement["per_image"]) == {"retina", str(photo)}
        assert r["dice_min"] == min(agreement["dice"].values())
        # pooled over the photos: a class empty in both paths everywhere counts as agreeing
        for c in ("EX", "HE", "MA", "SE"):
            if agreement["mask_pixels"][c] == 0:
                assert agreement["dice"][c] == 1.0
        assert r["tiled"]["tiles_run"] >= 1
    # Each model: the baseline and fast paths on the model's square, then the fast path on the
    # tiled photo; each figure lands where its call belongs.
    kinds = [spec_kind for spec_kind, _, _ in memory_calls]
    assert memory_calls == [
        (k, p, s) for k in dict.fromkeys(kinds) for p, s in (("baseline", None), ("fast", None), ("fast", (400, 300)))
    ]
    for i, r in enumerate(report["models"][m] for m in ("published", "checkpoint")):
        assert (r["memory_baseline"]["peak_mib"], r["memory_fast"]["peak_mib"]) == (4.0 + 3 * i, 5.0 + 3 * i)
        assert r["tiled"]["memory"]["peak_mib"] == 6.0 + 3 * i
    # The FLOPs are those of the configured architecture at the configured size.
    published = report["models"]["published"]
    model = HydraLANet(encoder="resnet18", decoder_channels=16).eval()
    assert published["gflop"] == pytest.approx(benchmark.count_gflop(model, torch.zeros(1, 3, 128, 128)))
    printed = capsys.readouterr().out
    assert "fast / bound" in printed and "coverage-matched" in printed


@pytest.mark.parametrize("path, photo", [("baseline", None), ("fast", (400, 300))])
def test_peak_memory_in_a_fresh_interpreter(tiny_checkpoint, path, photo):
    """The child interpreter builds the model, runs one image (the square, or a photo in tiles)
    and reports its own resident memory: the interpreter, then the model, then the peak."""
    figures = benchmark.peak_memory({"kind": "checkpoint", "source": str(tiny_checkpoint)}, path, photo)
    assert 0 < figures["runtime_mib"] < figures["model_mib"] <= figures["peak_mib"]
    assert figures["runtime_mib"] > 100  # torch alone is over 100 MiB of a fresh interpreter
