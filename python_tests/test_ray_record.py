"""record(..., engine="ray"): shards of cache chunks recorded by Ray tasks on a local cluster, merged by
one reader; the store must equal the single-process one bit for bit, and an interrupted run resumes."""

import pytest
import torch
from _probe_folder import write_probe_folder
from conftest import RAY_MISSING
from torch import nn

from neurocore import NeurocoreError
from neurocore.probe import record
from neurocore.scale import shard_chunks

pytest.importorskip("ray", reason=RAY_MISSING)

LAYERS = ["conv", "act", "fc"]
pytestmark = pytest.mark.filterwarnings("ignore:layer .* neurons are dead")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


class LoggedProbe(torch.utils.data.Dataset):
    """In-memory images with labels and a fingerprint; appends every index read to a log file; raises
    at ``fail_at`` (a worker that dies mid-run)."""

    def __init__(self, n, log, fail_at=None):
        g = torch.Generator().manual_seed(1)
        self.x = torch.rand(n, 3, 10, 10, generator=g)
        # ties: equal images give equal activations; the merge must order them by the lower index
        self.x[7] = self.x[2]
        self.x[12] = self.x[2]
        self.log, self.fail_at = str(log), fail_at

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise RuntimeError("worker died")
        with open(self.log, "a") as f:
            f.write(f"{i}\n")
        return self.x[i], i % 3

    def fingerprint(self):
        return "logged-probe-v1"

    def reads(self):
        with open(self.log) as f:
            return sorted(int(line) for line in f)


def assert_same(a, b):
    assert a.num_images == b.num_images
    assert a.image_ids == b.image_ids and a.skipped == b.skipped
    assert torch.equal(a.dataset_indices, b.dataset_indices)
    assert (a.labels is None and b.labels is None) or torch.equal(a.labels, b.labels)
    for name in LAYERS:
        x, y = a[name], b[name]
        assert torch.equal(x.summaries, y.summaries), name  # bit for bit
        assert torch.equal(x.top_values, y.top_values) and torch.equal(x.top_indices, y.top_indices), name


def test_shard_chunks_cover_every_chunk_once():
    for num_chunks in (1, 2, 5, 9):
        for shards in (1, 2, 3, 4, 12):
            runs = shard_chunks(num_chunks, shards)
            assert [c for r in runs for c in r] == list(range(num_chunks))
            assert len(runs) == min(shards, num_chunks) and all(len(r) > 0 for r in runs)
            assert max(map(len, runs)) - min(map(len, runs)) <= 1
    with pytest.raises(NeurocoreError, match="shards must be an integer >= 1"):
        shard_chunks(3, 0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_probe_folder(tmp_path_factory.mktemp("imgs"))  # b/4.png unreadable: skipped, in shard 2 of 3


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_ray_record_equals_single_process_bit_for_bit(cluster, folder, tmp_path, shards):
    import torchvision.transforms as T

    from neurocore.probe import ImageFolder

    probe = ImageFolder(folder)
    kw = dict(transform=T.ToTensor(), batch_size=2, chunk_size=4, top_k=5, progress=False)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable"):
        local = record(Net(), LAYERS, probe, **kw)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable"):
        dist = record(Net(), LAYERS, probe, engine="ray", shards=shards, cache_dir=tmp_path / "c", **kw)
    assert_same(dist, local)
    assert [i for i, _ in dist.skipped] == [13]
    assert dist.key == local.key


def test_ray_record_without_cache_dir_and_without_fingerprint(cluster):
    probe = [(torch.rand(3, 8, 8), i % 2) for i in range(11)]  # a plain list: rows reused by digest
    kw = dict(batch_size=3, chunk_size=3, top_k=4, progress=False)
    assert_same(record(Net(), LAYERS, probe, engine="ray", shards=2, **kw), record(Net(), LAYERS, probe, **kw))


def test_interrupted_ray_record_resumes_without_recomputing_finished_shards(cluster, tmp_path):
    kw = dict(batch_size=2, chunk_size=4, top_k=3, progress=False, cache_dir=tmp_path / "cache", shards=3)
    # 22 images, chunks of 4: 6 chunks, shards [0, 1], [2, 3], [4, 5]; the middle one dies at index 9
    broken = LoggedProbe(22, tmp_path / "log1", fail_at=9)
    with pytest.raises(Exception, match="worker died"):
        record(Net(), LAYERS, broken, engine="ray", **kw)
    # Which chunks the other workers finished before Ray stopped them varies from run to run, so the
    # resumed run is checked for results here, and for what it reads on a cache with a known gap below.
    resumed = record(Net(), LAYERS, LoggedProbe(22, tmp_path / "log2"), engine="ray", **kw)
    assert_same(resumed, record(Net(), LAYERS, LoggedProbe(22, tmp_path / "log2b"),
                                **{k: v for k, v in kw.items() if k not in ("cache_dir", "shards")}))
    # A known interruption: every chunk on disk except the middle shard's (chunks 2 and 3, indices 8..15).
    for folder in (tmp_path / "cache" / "activations").iterdir():
        for c in (2, 3):
            (folder / f"chunk-{c:06d}.pt").unlink()
    probe = LoggedProbe(22, tmp_path / "log2c")
    resumed = record(Net(), LAYERS, probe, engine="ray", **kw)
    reads = probe.reads()
    # only the unfinished shard (indices 8..15) ran; the finished shards' images were not read again,
    # except the cache content check's end rows of the reused chunks (two rows, before the workers)
    assert sorted(i for i in reads if 8 <= i < 16) == list(range(8, 16))
    others = [i for i in reads if not 8 <= i < 16]
    assert sorted(others) == [0, 21]  # the first and last reused rows, once: the reader reads no image
    local = record(Net(), LAYERS, LoggedProbe(22, tmp_path / "log3"), **{k: v for k, v in kw.items() if k not in ("cache_dir", "shards")})
    assert_same(resumed, local)
    # ties between equal images (2, 7, 12) are ordered by the lower index in every neuron's top-k
    top = resumed["fc"].top_indices
    for j in range(top.shape[1]):
        col = top[:, j].tolist()
        tied = [r for r in col if r in (2, 7, 12)]
        assert tied == sorted(tied)


def test_ray_engine_errors(cluster, tmp_path):
    probe = [(torch.rand(3, 8, 8), 0) for _ in range(4)]
    with pytest.raises(NeurocoreError, match="engine must be 'local' or 'ray'"):
        record(Net(), "fc", probe, engine="dask", progress=False)
    with pytest.raises(NeurocoreError, match="shards must be an integer >= 1"):
        record(Net(), "fc", probe, engine="ray", shards=0, progress=False)
    with pytest.raises(NeurocoreError, match="apply to engine='ray' only"):
        record(Net(), "fc", probe, shards=2, progress=False)
    with pytest.raises(NeurocoreError, match="needs cache_dir"):
        record(Net(), "fc", probe, engine="ray", address="10.0.0.1:6379", progress=False)
    with pytest.warns(UserWarning), pytest.raises(NeurocoreError, match="transform_key"):
        record(Net(), "fc", probe, engine="ray", transform=lambda x: x, cache_dir=tmp_path, progress=False)


def test_cli_dissect_engine_ray_matches_local(cluster, folder, tmp_path, capsys):
    import pandas as pd

    from neurocore.cli import main

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].bias.fill_(3.0)  # ImageNet normalisation makes inputs negative: keep the ReLU open
    torch.save(model, tmp_path / "model.pt")
    args = ["dissect", "--model", str(tmp_path / "model.pt"), "--layers", "0", "3", "--probe", str(folder),
            "--labels", "--input-size", "8", "--no-progress", "--batch-size", "4"]
    assert main(args + ["--out", str(tmp_path / "local")]) == 0
    assert main(args + ["--out", str(tmp_path / "ray"), "--engine", "ray", "--cache-dir", str(tmp_path / "c")]) == 0
    a = pd.read_csv(tmp_path / "local" / "explanations.csv")
    b = pd.read_csv(tmp_path / "ray" / "explanations.csv")
    pd.testing.assert_frame_equal(a, b)
    assert any((tmp_path / "c" / "activations").iterdir())  # the workers' shards met in the cache
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "x"), "--engine", "ray"]) != 0
    assert "--engine ray needs --cache-dir" in capsys.readouterr().err


class UnfingerprintedProbe(LoggedProbe):
    fingerprint = None  # no identity of its own: rows are reused by digest only


@pytest.mark.parametrize("probe_class", [LoggedProbe, UnfingerprintedProbe])
def test_ray_merge_decodes_no_image_and_runs_no_forward_pass(cluster, tmp_path, monkeypatch, probe_class):
    import neurocore.ops
    import neurocore.probe._forward
    import neurocore.probe._record

    calls = {"forward": 0, "topk_merge": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    # in this (the driver's) process only: the workers run the real functions
    forward = counted("forward", neurocore.probe._forward.hooked_forward)
    monkeypatch.setattr(neurocore.probe._forward, "hooked_forward", forward)
    monkeypatch.setattr(neurocore.probe._record, "hooked_forward", forward)
    monkeypatch.setattr(neurocore.ops, "topk_merge", counted("topk_merge", neurocore.ops.topk_merge))
    probe = probe_class(18, tmp_path / "log")
    kw = dict(batch_size=2, chunk_size=2, top_k=3, progress=False)
    dist = record(Net(), LAYERS, probe, engine="ray", shards=3, cache_dir=tmp_path / "c", **kw)
    assert probe.reads() == list(range(18))  # each image decoded once, by a worker
    assert calls == {"forward": 0, "topk_merge": 0}  # the 9 chunks reach the recorder as one update
    monkeypatch.undo()
    assert_same(dist, record(Net(), LAYERS, probe_class(18, tmp_path / "log2"), **kw))


@pytest.mark.parametrize("rows", [1, 5])
def test_ray_merge_joins_cached_chunks_exactly(cluster, folder, tmp_path, monkeypatch, rows):
    """The reader joins consecutive chunks into updates of about ``rows`` rows; at any size, with an
    empty chunk (a lone unreadable image) and labels, the store is the one-process store."""
    import torchvision.transforms as T

    import neurocore.probe._record
    from neurocore.probe import ImageFolder

    monkeypatch.setattr(neurocore.probe._record, "_CACHED_ROWS", rows)
    probe = ImageFolder(folder)
    kw = dict(transform=T.ToTensor(), batch_size=1, chunk_size=1, top_k=4, progress=False)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable"):
        local = record(Net(), LAYERS, probe, **kw)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable"):
        dist = record(Net(), LAYERS, probe, engine="ray", shards=4, cache_dir=tmp_path / "c", **kw)
    assert_same(dist, local)
    assert dist.skipped == local.skipped and [i for i, _ in dist.skipped] == [13]


def test_pack_ships_tensors_out_of_band_and_rebuilds_them_exactly():
    from neurocore.scale._ray import _pack, _unpack

    net = Net()
    net.head = nn.Linear(6, 6)
    net.tied = net.head  # a module (and its parameters) reached twice stays one object
    net.register_buffer("bf16", torch.rand(4, 3).to(torch.bfloat16))
    net.register_buffer("transposed", torch.rand(3, 5).t())  # not contiguous: torch's own reducer
    net.register_buffer("view", torch.arange(10.0)[2:6])  # part of a larger storage: torch's own reducer
    net.register_buffer("scalar", torch.tensor(7, dtype=torch.int64))
    net.conv.bias.requires_grad_(False)
    stream, buffers = _pack(net)
    assert len(buffers) == 8  # conv, fc, head: weight and bias; bf16, scalar (not transposed, view)
    copy = _unpack((stream, [b.copy() for b in buffers]))  # as a task gets them: other memory
    assert copy.tied is copy.head and copy.tied.weight is copy.head.weight
    for (name, a), (_, b) in zip(net.state_dict(keep_vars=True).items(), copy.state_dict(keep_vars=True).items()):
        assert type(a) is type(b) and a.dtype == b.dtype and a.stride() == b.stride(), name
        assert torch.equal(a, b) and a.requires_grad == b.requires_grad, name
        assert a.data_ptr() != b.data_ptr(), name
    copy.conv.weight.data.add_(1)  # owned, writable memory
    x = torch.rand(2, 3, 8, 8)
    assert not torch.equal(copy(x), net(x))
    assert torch.equal(_unpack(_pack(net))(x), net(x))


class WideNet(nn.Module):
    """A linear layer with a long inner dimension (3·32·32): its sums split by the torch thread count."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 32 * 32, 64)

    def forward(self, x):
        return self.fc(x.flatten(1))


class _Tensors(torch.utils.data.Dataset):
    def __init__(self, n):
        self.x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(2))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0

    def fingerprint(self):
        return "wide-probe-v1"


def test_ray_record_tasks_use_the_driver_thread_count(cluster, tmp_path):
    model, probe = WideNet(), _Tensors(32)
    kw = dict(batch_size=16, chunk_size=16, progress=False)  # 16 rows: a matmul the kernels split by threads
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = record(model, ["fc"], probe, **kw)["fc"].summaries
        torch.set_num_threads(4)
        local = record(model, ["fc"], probe, **kw)["fc"].summaries
        assert not torch.equal(one, local)  # the thread count changes the last bits: the check below can fail
        dist = record(model, ["fc"], probe, engine="ray", shards=2, cache_dir=tmp_path, **kw)["fc"].summaries
        assert torch.equal(dist, local)
    finally:
        torch.set_num_threads(before)
