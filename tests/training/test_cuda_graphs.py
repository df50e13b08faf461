"""train.cuda_graphs: the wiring on the CPU (a stand-in for the capture, which needs CUDA),
the settings it refuses, and on a GPU (skipped here) graphs that train as eager does."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from glidectl.training import cuda_graphs, engine
from glidectl.training.cuda_graphs import MAX_GRAPHS, GraphedNetwork
from glidectl.training.engine import Trainer


def _weights(run, step: int) -> dict[str, torch.Tensor]:
    return load_file(run.run_dir / "checkpoints" / f"step-{step:06d}" / "model.safetensors")


class _StandIn:
    """make_graphed_callables' place on the CPU: returns the module to run eagerly under the
    autocast it was recorded in (a graph replays the casts it recorded), and records what
    each capture was given."""

    def __init__(self):
        self.captures: list[dict] = []

    def __call__(self, module, args, allow_unused_input=False):
        dev = args[0].device.type
        amp = dict(device_type=dev, dtype=torch.get_autocast_dtype(dev),
                   enabled=torch.is_autocast_enabled(dev), cache_enabled=False)
        self.captures.append({"shapes": [tuple(a.shape) for a in args],
                              "autocast_cache": torch.is_autocast_cache_enabled(),
                              "unused_ok": allow_unused_input, "amp": amp})

        params = tuple(p for p in module.parameters() if p.requires_grad)
        static = [torch.zeros_like(p) for p in params]  # the graph's own gradient buffers

        class Replay(torch.autograd.Function):
            """As a graphed callable does: the backward writes the parameters' gradients
            into the same static buffers every time and returns them detached (which
            autograd's accumulation may keep as .grad: pytorch/pytorch#181723)."""

            @staticmethod
            def forward(ctx, *flat):
                with torch.enable_grad(), torch.autocast(**amp):
                    ctx.out = module(*flat[:len(args)])
                return ctx.out.detach()

            @staticmethod
            def backward(ctx, grad):
                grads = torch.autograd.grad(ctx.out, params, grad, allow_unused=True)
                for buffer, g in zip(static, grads, strict=True):
                    buffer.copy_(g) if g is not None else buffer.zero_()
                return (None,) * len(args) + tuple(b.detach() for b in static)

        return lambda *inputs: Replay.apply(*inputs, *params)


class _Net(torch.nn.Module):
    """Stands in for the GLIDE network: its output depends on every input and weight."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.w, self.dtype = torch.nn.Parameter(torch.ones(())), dtype

    def forward(self, x, ts, tokens, mask, low_res=None):
        out = x * self.w + ts.view(-1, 1, 1, 1) + tokens.sum() + mask.sum()
        return (out if low_res is None else out + low_res.mean()).to(self.dtype)


def test_each_input_signature_is_recorded_once_and_the_rest_runs_eagerly():
    net, capture = _Net(torch.bfloat16), _StandIn()
    eager = []
    graphed = GraphedNetwork(net, lambda *a, **k: eager.append(1) or net(*a, **k),
                             autocast=torch.bfloat16, capture=capture)

    def call(batch, **extra):
        return graphed(torch.randn(batch, 3, 4, 4), torch.arange(batch),
                       torch.ones(batch, 5, dtype=torch.long), torch.ones(batch, 5, dtype=bool),
                       **extra)

    out = call(2)
    assert out.dtype == torch.float32  # as accelerate's wrapper returns it
    call(2)
    assert graphed.recorded == 1 and not eager
    call(2, low_res=torch.randn(2, 3, 2, 2))  # another input set: another graph
    for batch in range(3, 3 + MAX_GRAPHS):
        call(batch)
    assert graphed.recorded == MAX_GRAPHS and graphed.eager_calls == MAX_GRAPHS - 2
    assert [c["shapes"][0] for c in capture.captures] == \
        [(2, 3, 4, 4), (2, 3, 4, 4), (3, 3, 4, 4), (4, 3, 4, 4)]
    assert capture.captures[1]["shapes"][4] == (2, 3, 2, 2)
    # Graphs are recorded without autocast's cast cache (a replay cannot use it).
    assert not any(c["autocast_cache"] for c in capture.captures)
    assert all(c["unused_ok"] for c in capture.captures)
    eager.clear()
    with torch.no_grad():
        call(2)
    net.eval()
    call(2)
    assert len(eager) == 2 and graphed.recorded == MAX_GRAPHS  # no graph for inference


def test_a_run_through_the_graph_wiring_trains_the_same_weights(tiny, monkeypatch):
    """The step's calls go through GraphedNetwork (each signature "recorded" by the stand-in)
    with gradient accumulation, EMA and a resume: the weights are those of an eager run."""
    sections = dict(train=dict(steps=3, grad_accum=2, cuda_graphs=True, deterministic=True),
                    checkpoint=dict(every=1))  # deterministic: two GPU runs compare exactly
    made = []

    def wired(tc, acc, model, net, autocast):
        made.append(GraphedNetwork(net, model, autocast=cuda_graphs.AUTOCAST.get(autocast),
                                   capture=_StandIn()))
        return made[-1], None

    monkeypatch.setattr(engine, "graphed_network", wired)
    graphed = tiny(**sections)
    graphed.train.name = "graphed"
    Trainer(graphed, quiet=True).run(until=2)
    resumed = Trainer(graphed, resume="latest", quiet=True).run()
    assert [g.recorded for g in made] == [1, 1] and not any(g.eager_calls for g in made)
    monkeypatch.undo()
    eager = tiny(**sections)
    eager.train.name, eager.train.cuda_graphs = "eager", False
    plain = Trainer(eager, quiet=True).run()
    wa, wb = _weights(resumed, 3), _weights(plain, 3)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_lora_run_through_the_graph_wiring_trains_the_same_adapter(tmp_path, monkeypatch):
    """LoRA: only the adapters have gradients (the graph's static buffers are theirs)."""
    from test_lora import lora_config

    from glidectl.lora import train_lora

    def wired(tc, acc, model, net, autocast):
        made.append(GraphedNetwork(net, model, autocast=cuda_graphs.AUTOCAST.get(autocast),
                                   capture=_StandIn()))
        return made[-1], None

    made, folders = [], {}
    for graphs in (True, False):
        if graphs:
            monkeypatch.setattr(engine, "graphed_network", wired)
        cfg = lora_config(tmp_path, train=dict(steps=2, grad_accum=2, deterministic=True,
                                               name=f"lora{int(graphs)}"),
                          checkpoint=dict(every=0), lora=dict(patterns=[r"out\.2"]))
        folders[graphs] = train_lora(cfg, quiet=True).run_dir / "checkpoints" / "step-000002"
        monkeypatch.undo()
    assert [g.recorded for g in made] == [1]
    files = sorted(str(p.relative_to(folders[True])) for p in folders[True].rglob("*.safetensors")
                   if "rng" not in p.name)  # adapters, their EMA, the optimizer's moments
    assert len(files) == 4 and all((folders[False] / name).is_file() for name in files)
    for name in files:
        a, b = load_file(folders[True] / name), load_file(folders[False] / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_without_a_cuda_device_the_run_trains_eagerly_with_one_warning(tiny, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the option applies")
    trainer = Trainer(tiny(train=dict(steps=1, cuda_graphs=True)))
    assert trainer.net is trainer.model
    out = capsys.readouterr().out
    assert "Warning: train.cuda_graphs needs a CUDA device; training on cpu eagerly." in out
    assert trainer.run().step == 1


@pytest.mark.parametrize(("setting", "clash"), [
    ("train.compile=true", "train.compile"),
    ("train.gradient_checkpointing=true", "train.gradient_checkpointing"),
])
def test_settings_graphs_cannot_work_with_are_one_sentence(tiny, config_file, tmp_path,
                                                            capsys, setting, clash):
    from glidectl.cli import app

    path = config_file(tiny())
    with pytest.raises(SystemExit) as done:
        app.main(["train", "--config", str(path), "--set", "train.cuda_graphs=true",
                  "--set", setting, "--no-live"])
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        "Error: train.cuda_graphs records the network for one process without torch.compile "
        f"or gradient checkpointing, but this run has {clash}; set train.cuda_graphs = false "
        f"(or turn {clash} off).\n")
    assert not (tmp_path / "runs" / "t").exists()  # nothing left behind


def test_more_than_one_process_is_refused():
    class Tc:
        cuda_graphs, compile, gradient_checkpointing = True, False, False

    with pytest.raises(Exception, match="but this run has 2 processes"):
        cuda_graphs.check_cuda_graphs(Tc(), processes=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_graphs_train_as_eager_on_a_gpu(tiny, precision):
    """Replayed kernels are the eager ones: with deterministic kernels the same weights."""
    weights = {}
    for graphs in (False, True):
        cfg = tiny(train=dict(steps=6, batch_size=4, cuda_graphs=graphs, precision=precision,
                              deterministic=True, grad_accum=2), checkpoint=dict(every=0))
        cfg.train.name = f"g{int(graphs)}"
        trainer = Trainer(cfg, quiet=True)
        run = trainer.run()
        if graphs:
            assert isinstance(trainer.net, GraphedNetwork) and trainer.net.recorded == 1
        weights[graphs] = _weights(run, 6)
    wa, wb = weights[False], weights[True]
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst <= 1e-6, worst
