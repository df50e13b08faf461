"""FID/KID through torchmetrics with a small local feature extractor; absent, never 0, without
weights."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from PIL import Image

from glidectl.errors import GlidectlError
from glidectl.fid import (
    Features,
    eval_fid,
    fid_kid,
    inception_features,
    reference_images,
    reference_stats,
    to_uint8,
)


class ColourStats(torch.nn.Module):
    """Features: per-channel mean and std of a fixed random 3x3 conv (uint8 in, (N, 6) out)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3)
        torch.nn.init.normal_(self.conv.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.float() / 255)
        return torch.cat([y.mean((2, 3)), y.std((2, 3))], dim=1)


def _images(seed: int, n: int, brightness: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 16, 16, generator=g) * 0.5 + brightness - 1).clamp(-1, 1)


def test_fid_and_kid_tell_distributions_apart():
    features = Features(module=ColourStats())
    real = [_images(0, 24, 0.5)]
    same = fid_kid(real, [_images(1, 24, 0.5)], features)
    brighter = fid_kid(real, [_images(2, 24, 1.2)], features)
    assert same["fid_real"] == 24 and same["fid_fake"] == 24
    assert 0 <= same["fid"] < brighter["fid"] / 10
    assert abs(same["kid"]) < brighter["kid"] / 10
    assert fid_kid(real, real, features)["fid"] == pytest.approx(0, abs=1e-3)


def test_kid_is_the_same_whatever_the_global_random_state():
    features = Features(module=ColourStats())
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # KID draws its subsets at random
        runs.append(fid_kid([_images(0, 24, 0.5)], [_images(2, 20, 0.9)], features))
    assert runs[0]["kid"] == runs[1]["kid"] and runs[0]["kid_std"] == runs[1]["kid_std"]


def test_without_weights_the_metric_is_absent_with_the_reason():
    out = fid_kid([_images(0, 4, 0.5)], [_images(1, 4, 0.5)], inception_features(None))
    assert set(out) == {"fid_missing"} and "--fid-weights" in out["fid_missing"]


def test_weights_files_are_checked_without_running_code(tmp_path):
    with pytest.raises(GlidectlError, match="do not exist"):
        inception_features(tmp_path / "missing.pth")
    with pytest.raises(GlidectlError, match=r"are a folder, not a file; pass the path of"):
        inception_features(tmp_path)
    with pytest.raises(GlidectlError, match=r"'/dev/null' are no file \(a device or a pipe\)"):
        inception_features("/dev/null")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "bad.pth"
    bad.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(GlidectlError, match="not a plain state_dict"):
        inception_features(bad)
    assert not marker.exists()


def test_a_torch_fidelity_that_does_not_import_is_a_reason_not_a_traceback(tmp_path,
                                                                             monkeypatch):
    """pip's newest torchvision, built for another torch, raises RuntimeError on import
    ("operator torchvision::nms does not exist"): FID is absent, saying so, and training and
    eval go on instead of stopping with a traceback."""
    import sys

    fake = tmp_path / "site" / "torch_fidelity"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "torch_fidelity", raising=False)
    weights = tmp_path / "inc.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    features = inception_features(weights)
    assert not features.available
    assert "torchvision::nms" in features.reason and "torchvision" in features.reason
    out = fid_kid([_images(0, 2, 0.5)], [_images(1, 2, 0.5)], features)
    assert out == {"fid_missing": features.reason}
    # torchmetrics, installed, fails the same way when it imports torchvision
    (tmp_path / "site" / "torchvision").mkdir()
    (tmp_path / "site" / "torchvision" / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    (tmp_path / "site" / "torchmetrics" / "image").mkdir(parents=True)
    (tmp_path / "site" / "torchmetrics" / "__init__.py").write_text("")
    (tmp_path / "site" / "torchmetrics" / "image" / "__init__.py").write_text(
        "import torchvision\n")
    for name in [m for m in sys.modules if m.split(".")[0] in ("torchmetrics", "torchvision")]:
        monkeypatch.delitem(sys.modules, name)
    out = fid_kid([_images(0, 2, 0.5)], [_images(1, 2, 0.5)], Features(module=ColourStats()))
    assert out["fid_missing"].startswith("torchmetrics does not import (RuntimeError: "
                                         "operator torchvision::nms does not exist)")


def inception_weights_file(path, monkeypatch):
    """Random weights in the Inception-v3 layout torch-fidelity builds (fp16 to halve the
    file): the file --fid-weights takes, without a download."""
    tf = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    torch.save({}, path)
    with monkeypatch.context() as patch:
        patch.setattr(tf.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None)
        net = tf.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                             feature_extractor_weights_path=str(path))
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, t in net.state_dict().items():
        if t.ndim > 1:
            t = torch.randn(t.shape, generator=g) * (2 / t[0].numel()) ** 0.5
        state[name] = t.half() if t.is_floating_point() else t
    torch.save(state, path)
    return path


def test_an_inception_weights_file_gives_fid_and_kid(tmp_path, monkeypatch):
    """The path --fid-weights takes; torchmetrics' KID has no weights-path argument and
    raised "Unexpected keyword arguments" when given one."""
    features = inception_features(inception_weights_file(tmp_path / "inc.pth", monkeypatch))
    assert features.weights is not None
    out = fid_kid([_images(0, 2, 0.5)], [_images(1, 2, 1.2)], features)
    assert (out["fid_real"], out["fid_fake"]) == (2, 2) and out["fid"] > 0
    assert math.isfinite(out["kid"]) and math.isfinite(out["kid_std"])


def test_images_and_references_become_uint8_batches(tmp_path):
    folder = tmp_path / "ref"
    folder.mkdir()
    for i, rgb in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        Image.new("RGB", (20, 24), rgb).save(folder / f"{i}.png")
    batches = reference_images(str(folder), 16, limit=2)
    assert [tuple(b.shape) for b in batches] == [(2, 3, 16, 16)]
    pil = [Image.new("RGB", (16, 16), (255, 0, 0))]
    assert to_uint8(pil)[0, :, 0, 0].tolist() == [255, 0, 0]
    assert to_uint8(torch.full((1, 3, 2, 2), -1.0)).max() == 0


def test_reference_statistics_give_the_fid_of_their_images(tmp_path):
    """An .npz of mu/sigma (pytorch-fid, clean-fid) of a folder's features scores as the
    folder itself; KID, which needs the images, is absent with the reason."""
    import numpy as np

    folder = tmp_path / "ref"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (16, 16), (20 * i, 90, 250 - 15 * i)).save(folder / f"{i}.png")
    network = ColourStats()
    with torch.no_grad():
        feats = torch.cat([network(to_uint8(b)) for b in reference_images(str(folder), 16, 99)])
    stats = tmp_path / "ref_stats.npz"
    np.savez(stats, mu=feats.double().mean(0).numpy(),
             sigma=np.cov(feats.double().numpy(), rowvar=False))
    fake = [Image.new("RGB", (16, 16), (30 * i, 60, 200)) for i in range(8)]
    features = Features(module=network)
    from_images = eval_fid(fake, str(folder), features)
    from_stats = eval_fid(fake, str(stats), features)
    assert from_stats["fid"] == pytest.approx(from_images["fid"], rel=1e-6)
    assert from_stats["fid"] > 0.1 and from_stats["fid_fake"] == 8
    assert "KID needs reference images" in from_stats["kid_missing"] and "kid" not in from_stats


def test_bad_statistics_files_are_one_line_and_never_unpickled(tmp_path):
    import numpy as np

    def saved(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return str(tmp_path / name)

    cases = {
        str(tmp_path / "missing.npz"): "does not exist",
        saved("objects.npz", mu=np.array([{"a": 1}], dtype=object), sigma=np.eye(1)):
            "not a readable .npz",
        saved("other.npz", arr_0=np.zeros(3)): "holds arr_0, not FID statistics",
        saved("shapes.npz", mu=np.zeros(3), sigma=np.eye(2)): r"'mu' \[3\] and 'sigma' \[2, 2\]",
        saved("nan.npz", mu=np.full(2, np.nan), sigma=np.eye(2)): "not finite",
    }
    (tmp_path / "text.npz").write_text("mu, sigma")
    cases[str(tmp_path / "text.npz")] = r"not a readable \.npz .*not a zip archive"
    for path, message in cases.items():
        with pytest.raises(GlidectlError, match=message):
            reference_stats(path)
    with pytest.raises(GlidectlError) as text_file:  # numpy's reason blamed a pickle
        reference_stats(tmp_path / "text.npz")
    assert "pickle" not in str(text_file.value)
    wide = saved("wide.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(GlidectlError, match="statistics of 2048 features, but the feature "
                                            "network gives 6"):
        eval_fid([Image.new("RGB", (16, 16))] * 2, wide, Features(module=ColourStats()))


def test_damaged_statistics_files_are_one_line(tmp_path):
    """A statistics file damaged inside its zip (an array header's bytes changed, a
    compressed stream's) is one sentence naming it, not numpy's tokenize or zlib traceback."""
    import zipfile

    import numpy as np

    plain, packed = tmp_path / "plain.npz", tmp_path / "packed.npz"
    np.savez(plain, mu=np.zeros(1024), sigma=np.eye(8))  # more than zipfile's first read
    np.savez_compressed(packed, mu=np.zeros(8), sigma=np.eye(8))
    plain.write_bytes(plain.read_bytes().replace(b"(1024,), }", b"((1024,) }", 1))  # tokenize
    info = zipfile.ZipFile(packed).getinfo("sigma.npy")
    data = bytearray(packed.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 10
    data[start:start + 30] = b"\xff" * 30  # zlib
    packed.write_bytes(bytes(data))
    for path in (plain, packed):
        with pytest.raises(GlidectlError, match=rf"'{path}' is not a readable \.npz of arrays"):
            reference_stats(path)


def test_statistics_beside_other_arrays_read_only_mu_and_sigma(tmp_path):
    """A file with more than the statistics (guided-diffusion's reference batch: its images
    as arr_0; a pickled note) gives its mu and sigma: the other arrays are never loaded, so
    an object array among them is not refused and never unpickled."""
    import numpy as np

    mu, sigma = np.arange(3.0), np.diag([1.0, 2.0, 3.0])
    path = tmp_path / "VIRTUAL_ref_batch.npz"
    np.savez(path, arr_0=np.zeros((4, 8, 8, 3), np.uint8), mu=mu, sigma=sigma,
             info=np.array([{"dataset": "x"}], dtype=object))
    got_mu, got_sigma = reference_stats(path)
    assert got_mu.tolist() == mu.tolist() and got_sigma.tolist() == sigma.tolist()


def test_fid_fed_a_batch_at_a_time_equals_fid_of_all_images_at_once(tmp_path, monkeypatch):
    """eval's FID/KID (FidStream: 64 generated images a batch, references read 64 at a time)
    gives the numbers of every image at once, and of the features' mean and covariance."""
    import numpy as np

    from glidectl.fid import FidStream, features_of, frechet_distance

    folder = tmp_path / "ref"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(70):
        Image.fromarray(g.integers(0, 200, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    fake = [Image.fromarray(g.integers(40, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(67)]
    features = Features(module=ColourStats())
    streamed = eval_fid(fake, str(folder), features)
    real = torch.cat(list(reference_images(str(folder), 16, 99)))
    at_once = fid_kid([real], [to_uint8(fake)], features)
    assert streamed["fid_real"] == 70 and streamed["fid_fake"] == 67
    for key in ("fid", "kid", "kid_std"):
        assert streamed[key] == pytest.approx(at_once[key], rel=1e-6), key
    r, f = (features_of(features.network(), [b])[0].double() for b in (real, to_uint8(fake)))
    assert streamed["fid"] == pytest.approx(frechet_distance(
        r.mean(0), torch.cov(r.T), f.mean(0), torch.cov(f.T)), rel=1e-6)
    np.savez(tmp_path / "stats.npz", mu=r.mean(0).numpy(), sigma=torch.cov(r.T).numpy())
    stream = FidStream(str(tmp_path / "stats.npz"), features)
    for k in range(0, 67, 10):  # any batching: the same statistics
        stream.add(fake[k:k + 10])
    assert stream.result()["fid"] == pytest.approx(streamed["fid"], rel=1e-6)
    opened = []  # the references are read a batch at a time, not all before the first
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    batches = reference_images(str(folder), 16, 99, batch=8)
    assert next(batches).shape == (8, 3, 16, 16) and len(opened) == 8
    assert [b.shape[0] for b in batches] == [8] * 7 + [6]


def test_kid_subsets_hold_at_most_1000_images_however_many_there_are(monkeypatch):
    """KID's kernels hold subset² numbers: subsets of every image took 1 GiB more at 8,000
    images (~15 GiB at 30,000). They hold 1,000 (torchmetrics' and torch-fidelity's size),
    or all of the smaller side below that."""
    import torchmetrics.image.kid as tm_kid

    from glidectl.fid import fid_kid_of

    seen = []
    real_mmd = tm_kid.poly_mmd
    monkeypatch.setattr(tm_kid, "poly_mmd", lambda a, b, *rest: seen.append(
        (a.shape[0], b.shape[0])) or real_mmd(a, b, *rest))
    g = torch.Generator().manual_seed(0)
    big = fid_kid_of([torch.randn(1200, 6, generator=g)], [torch.randn(1100, 6, generator=g)])
    assert seen == [(1000, 1000)] * 10 and math.isfinite(big["kid"])
    seen.clear()
    fid_kid_of([torch.randn(30, 6, generator=g)], [torch.randn(20, 6, generator=g)])
    assert seen == [(20, 20)] * 10


def test_reference_folder_images_are_decoded_as_training_decodes_them(tmp_path):
    """A reference folder's transparent PNG, dark 16-bit scan and phone photo (EXIF
    orientation 6) reached FID black-backed, white and lying on their side; they are read as
    training reads them: over white, scaled by bit depth, upright."""
    import numpy as np
    from PIL import ImageDraw

    folder = tmp_path / "ref"
    folder.mkdir()
    logo = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(logo).ellipse((12, 12, 20, 20), fill=(255, 0, 0, 255))
    logo.save(folder / "a_logo.png")
    Image.fromarray(np.full((32, 32), 4096, np.uint16)).save(folder / "b_dark16.png")
    halves = np.zeros((16, 32, 3), np.uint8)
    halves[:, :16], halves[:, 16:] = (255, 0, 0), (0, 0, 255)  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise: red on top, blue below
    Image.fromarray(halves).save(folder / "c_phone.png", exif=exif.tobytes())
    logo_px, dark, phone = ((b + 1) * 127.5 for b in next(reference_images(str(folder), 16, 9)))
    assert logo_px[:, 0, 0].round().tolist() == [255, 255, 255]
    assert dark.max().round() == 15
    assert phone[:, 2, 8].round().tolist() == [255, 0, 0]
    assert phone[:, 13, 8].round().tolist() == [0, 0, 255]


def test_a_reference_folder_is_walked_as_training_walks_an_image_folder(tmp_path):
    """--fid FOLDER read the hidden .ipynb_checkpoints copies and left out the images of a
    linked folder, which training's folder scan reads."""
    folder, linked = tmp_path / "ref", tmp_path / "elsewhere"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    linked.mkdir()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(folder / "a.png")
    Image.new("RGB", (16, 16), (0, 0, 0)).save(folder / ".ipynb_checkpoints" / "a-checkpoint.png")
    Image.new("RGB", (16, 16), (0, 0, 0)).save(folder / ".hidden.png")
    Image.new("RGB", (16, 16), (0, 200, 0)).save(linked / "b.png")
    (folder / "more").symlink_to(linked, target_is_directory=True)
    batches = list(reference_images(str(folder), 16, limit=9))
    means = [round(float(x)) for x in torch.cat(batches).mean(dim=(2, 3))[:, :2].flatten()]
    assert means == [1, -1, -1, 1]  # a.png (red), then more/b.png (green); no black copies


def test_a_reference_folder_above_the_limit_is_sampled_across_its_subfolders(tmp_path):
    """A folder of more references than the limit (50,000 in eval) gave its first files in
    sorted order: a class-per-subfolder reference set was scored as its first classes only."""
    for name, rgb in [("cats", (200, 0, 0)), ("dogs", (0, 0, 200))]:
        (tmp_path / "ref" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), rgb).save(tmp_path / "ref" / name / f"{i}.png")
    batch = torch.cat(list(reference_images(str(tmp_path / "ref"), 16, limit=2)))
    assert [round(float(x)) for x in batch.mean(dim=(2, 3))[:, 0]] == [1, -1]  # a cat, a dog


def test_unreadable_reference_files_are_left_out_and_named_not_a_traceback(tmp_path):
    """A damaged file in a reference folder of thousands raised PIL's UnidentifiedImageError
    after every image of the eval had been made; it is left out, counted and named."""
    folder = tmp_path / "ref"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(folder / f"{i}.png")
    (folder / "0_broken.png").write_bytes(b"not a png")
    (folder / "truncated.jpg").write_bytes(b"\xff\xd8\xff")
    unreadable: list[str] = []
    batches = list(reference_images(str(folder), 16, limit=4, unreadable=unreadable))
    assert [b.shape[0] for b in batches] == [4]  # the limit counts images read
    assert unreadable == ["0_broken.png"]  # files after the limit are not opened
    fake = [Image.new("RGB", (16, 16), (0, 40 * i, 0)) for i in range(3)]
    result = eval_fid(fake, str(folder), Features(module=ColourStats()))
    assert result["fid_real"] == 4 and result["reference_unreadable"] == 2
    assert sorted(result["reference_unreadable_files"]) == ["0_broken.png", "truncated.jpg"]


def test_one_feature_statistics_and_half_precision_features_score_as_float32(tmp_path):
    """A feature network of one output gave torch.cov's 0-d tensor against a 1×1 sigma (a
    traceback); float16 features overflowed KID's kernel sums (NaN). Both score as the same
    features in float32."""
    import numpy as np

    from glidectl.fid import fid_against_stats, fid_kid_of

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(50, 1, generator=g), torch.randn(40, 1, generator=g) + 0.5
    x = real.double()
    exact = float((x.mean() - fake.double().mean()) ** 2 + (x.std() - fake.double().std()) ** 2)
    stats = tmp_path / "one.npz"
    np.savez(stats, mu=x.mean(0).numpy(), sigma=np.cov(x.numpy(), rowvar=False).reshape(1, 1))
    assert fid_against_stats([fake], str(stats))["fid"] == pytest.approx(exact, rel=1e-6)
    assert fid_kid_of([real], [fake])["fid"] == pytest.approx(exact, rel=1e-4)
    wide = [torch.rand(60, 64, generator=g) * 8, torch.rand(60, 64, generator=g) * 8 + 0.1]
    full = fid_kid_of([wide[0]], [wide[1]])
    half = fid_kid_of([wide[0].half()], [wide[1].half()])
    assert math.isfinite(half["kid"]) and math.isfinite(half["kid_std"])
    assert half["kid"] == pytest.approx(full["kid"], rel=1e-2)


class NaNFeatures(torch.nn.Module):
    """A feature network whose features of images brighter than mid-grey are NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = ColourStats()(x)
        return torch.where(x.float().mean((1, 2, 3), keepdim=True)[:, :, 0, 0] > 127,
                           torch.nan, stats)


def test_non_finite_features_or_scores_are_absent_with_the_reason_never_nan(tmp_path):
    """NaN features gave FID and KID NaN, written to metadata.json as the bare token NaN,
    which is not JSON: strict parsers (jq, JSON.parse) refused the whole file."""
    import json

    from glidectl.atomic import write_json
    from glidectl.fid import finite_scores

    features = Features(module=NaNFeatures())
    result = fid_kid([_images(0, 4, 0.5)], [_images(1, 3, 1.5)], features)
    assert set(result) == {"fid_missing"}
    assert "3 of the 3 generated images are not finite numbers" in result["fid_missing"]
    kid_nan = finite_scores({"fid": 3.0, "kid": math.nan, "kid_std": 0.1, "fid_real": 4,
                             "fid_fake": 3})
    assert kid_nan["fid"] == 3.0 and "kid" not in kid_nan and "kid_missing" in kid_nan
    assert "fid_missing" in finite_scores({"fid": math.inf, "fid_fake": 3})

    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    write_json(tmp_path / "m.json", {"metrics": {"x": [1.5, math.nan, {"y": -math.inf}]}})
    strict = json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse)
    assert strict == {"metrics": {"x": [1.5, None, {"y": None}]}}


def _shards(root, colours: int, per_shard: int):
    """``colours`` shards of ``per_shard`` captioned 16 px images, shard k all red k·60."""
    import io
    import tarfile

    root.mkdir()
    for s in range(colours):
        with tarfile.open(root / f"shard-{s:05d}.tar", "w") as tar:
            for i in range(per_shard):
                png = io.BytesIO()
                Image.new("RGB", (16, 16), (60 * s, 0, 0)).save(png, "PNG")
                for name, data in ((f"s{s}i{i}.png", png.getvalue()), (f"s{s}i{i}.txt", b"c")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def test_a_larger_reference_source_is_read_spread_over_its_shards_and_a_shard_folder_reads(
        tmp_path):
    """A --fid source that is no image folder (shards) gave its first samples, all of its
    first shards; a folder of shards, which training reads, was refused as a folder that
    holds no image."""
    from glidectl.fid import check_reference, spread_order

    assert spread_order(8) == [0, 4, 2, 6, 1, 5, 3, 7] and spread_order(1) == [0]
    folder = _shards(tmp_path / "shards", 4, 3)
    check_reference(str(folder))
    for source in (str(folder), str(folder / "shard-{00000..00003}.tar")):
        batch = torch.cat(list(reference_images(source, 16, limit=4)))
        reds = [round((float(x) + 1) * 127.5 / 60) for x in batch.mean(dim=(2, 3))[:, 0]]
        assert reds == [0, 0, 0, 2]  # shard 0 whole, then shard 2, not shard 1
    assert torch.cat(list(reference_images(str(folder), 16, limit=99))).shape[0] == 12


def test_an_eval_folder_as_reference_reads_its_images_not_its_grid_or_inputs(tmp_path):
    """--fid eval/0001 (a model's eval against another's) scored the eval's grid.png and an
    upsampler eval's 64 px inputs/ as reference images beside its images."""
    out = tmp_path / "eval"
    (out / "inputs").mkdir(parents=True)
    for name in ("000_a.png", "001_b.png", "grid.png", "inputs/000_a.png"):
        Image.new("RGB", (16, 16), (200, 0, 0)).save(out / name)
    assert torch.cat(list(reference_images(str(out), 16, limit=99))).shape[0] == 4
    (out / "metadata.json").write_text('{"status": "complete", "images": []}')
    assert torch.cat(list(reference_images(str(out), 16, limit=99))).shape[0] == 2
