"""nst_engine against pastiche on the same photo, style, size and layers.

Each side runs in its own subprocess (so peak RSS is its own) and writes a PNG; both PNGs are
then scored by one fp32 evaluator: pastiche's default Gatys loss (content relu4_2 × 0.01, style
relu1_1..relu5_1 with 10/C² per layer, no TV) on the same VGG19 at the same size. nst_engine
optimises that same objective here (not its own normalised one), so the question is only who
gets there faster. The engine runs once per precision (fp32 and bf16 convolutions by default;
the evaluator is fp32 either way), and the line says which one `auto` picks on this machine.

    .venv/bin/python bench/engine_vs_pastiche.py [--size 384] [--pastiche-steps 300]
        [--quality standard] [--iterations N] [--content samples/chelsea.png]
        [--style starry-night] [--precisions fp32 bf16] [--only pastiche|engine]

`--default-job` times the product instead: pastiche's first 10 steps at 512 px against the
engine's default job (512 px, `standard`, the product objective through `transfer.stylize`,
precision `auto` unless --precisions says otherwise), back to back, `--repeat` times, and prints
the ratios of each round (process CPU time as well as wall time):

    .venv/bin/python bench/engine_vs_pastiche.py --default-job [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """User + system CPU time of this process: fairer than wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _style_image(name_or_path: str):
    from nst_engine import images, styles

    if Path(name_or_path).is_file():
        return images.decode(Path(name_or_path).read_bytes())
    return styles.image(name_or_path)


def pastiche_weights(content_features, grams, weights):
    """pastiche's default objective expressed as nst_engine Targets (one style)."""
    from nst_engine.losses import Targets
    from nst_engine.vgg import CONTENT_LAYER, STYLE_LAYERS

    (style,) = grams
    return Targets(
        content=content_features[CONTENT_LAYER].detach().float(),
        content_weight=0.01,
        style={layer: style[layer] for layer in STYLE_LAYERS},
        # 10/C² on the mean squared Gram error = 10/C⁴ on the summed one
        style_weight={layer: 10.0 / style[layer].shape[-1] ** 4 for layer in STYLE_LAYERS},
        tv_weight=0.0,
    )


def run_pastiche(args: argparse.Namespace) -> dict:
    import torch
    from pastiche.pastiche import PasticheArtist, save_image

    torch.manual_seed(0)
    start = time.perf_counter()
    artist = PasticheArtist(args.content, [args.style_file], size=args.size, device="cpu")
    loop_start, cpu_start = time.perf_counter(), _cpu_seconds()
    for _ in range(args.pastiche_steps):
        artist.draw()
    loop, loop_cpu = time.perf_counter() - loop_start, _cpu_seconds() - cpu_start
    save_image(artist.pastiche, args.out)
    return {
        "wall": time.perf_counter() - start,
        "optimise": loop,
        "optimise_cpu": loop_cpu,
        "cpu": _cpu_seconds(),
        "steps": args.pastiche_steps,
        "rss": _peak_rss_mib(),
    }


def run_engine(args: argparse.Namespace) -> dict:
    from nst_engine import images
    from nst_engine.inputs import StyleImage
    from nst_engine.paint_job import to_image
    from nst_engine.schedule import plan
    from nst_engine.transfer import paint
    from nst_engine.vgg import load_model, pick_device

    start = time.perf_counter()
    device = pick_device("cpu")
    model = load_model(device)
    content = images.decode(Path(args.content).read_bytes())
    style = StyleImage(images.decode(Path(args.style_file).read_bytes()), 1.0, None)
    scales = plan(*content.size, args.size, args.quality, args.iterations)
    loop_start, cpu_start = time.perf_counter(), _cpu_seconds()
    bf16 = args.precision == "bf16"
    x, _, _ = paint(model, content, [style], scales, pastiche_weights, seed=0, bf16=bf16)
    loop, loop_cpu = time.perf_counter() - loop_start, _cpu_seconds() - cpu_start
    to_image(x, None).save(args.out)
    return {
        "wall": time.perf_counter() - start,
        "optimise": loop,
        "optimise_cpu": loop_cpu,
        "cpu": _cpu_seconds(),
        "steps": sum(s.steps for s in scales),
        "schedule": " ".join(f"{s.width}x{s.height}:{s.steps}" for s in scales),
        "rss": _peak_rss_mib(),
    }


def run_job(args: argparse.Namespace) -> dict:
    """The engine's default job as the bot runs it: one StyleRequest through stylize()."""
    from nst_engine.api import StyleRequest, StyleSource
    from nst_engine.transfer import stylize

    request = StyleRequest(
        content=Path(args.content).read_bytes(), styles=(StyleSource(name=args.style),),
        size=args.size, quality=args.quality, precision=args.precision,
    )  # fmt: skip
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    result = stylize(request, device="cpu")
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    Path(args.out).write_bytes(result.image)
    return {"optimise": wall, "optimise_cpu": cpu, "steps": result.iterations}


def default_job(args: argparse.Namespace, tmp: Path) -> None:
    """pastiche's 10 steps, then the engine's default job, `repeat` times: ratio per round."""
    args.size, args.pastiche_steps, args.quality = 512, 10, "standard"
    precision = args.precisions[0] if args.precisions_given else "auto"
    walls, cpus = [], []
    for round_ in range(args.repeat):
        p = spawn("pastiche", args, tmp / "pastiche.png")
        e = spawn("job", args, tmp / "job.png", precision)
        walls.append(e["optimise"] / p["optimise"])
        cpus.append(e["optimise_cpu"] / p["optimise_cpu"])
        print(f"round {round_ + 1}: pastiche 10 steps {p['optimise']:.1f} s "
              f"(CPU {p['optimise_cpu']:.1f} s, with setup {p['wall']:.1f} s); default job "
              f"({precision}) {e['optimise']:.1f} s (CPU {e['optimise_cpu']:.1f} s, "
              f"{e['steps']} steps); job/pastiche wall {walls[-1]:.2f}x, CPU {cpus[-1]:.2f}x",
              flush=True)  # fmt: skip
    print(f"job/pastiche over {args.repeat} rounds: wall {min(walls):.2f}–{max(walls):.2f}x, "
          f"CPU {min(cpus):.2f}–{max(cpus):.2f}x")  # fmt: skip


def evaluate(output: Path, content_path: str, style_file: str) -> float:
    """pastiche's default loss of `output`, in fp32 on the CPU, at the output's size."""
    import torch
    from PIL import Image

    from nst_engine import images
    from nst_engine.losses import objective, style_grams
    from nst_engine.schedule import Scale, style_dims
    from nst_engine.vgg import load_model, preprocess

    model = load_model(torch.device("cpu"))
    out = images.decode(output.read_bytes())
    content = images.decode(Path(content_path).read_bytes()).resize(
        out.size, Image.Resampling.LANCZOS
    )
    style = images.decode(Path(style_file).read_bytes())
    style = style.resize(
        style_dims(style, Scale(out.width, out.height, 1)), Image.Resampling.LANCZOS
    )
    with torch.no_grad():
        content_features = model(preprocess(images.to_tensor(content)))
        grams = style_grams(model(preprocess(images.to_tensor(style))))
        targets = pastiche_weights(content_features, [grams], [1.0])
        x = preprocess(images.to_tensor(out))
        loss, _ = objective(model(x), x / 255.0, targets)
    return loss.item()


def child(args: argparse.Namespace) -> None:
    runners = {"pastiche": run_pastiche, "engine": run_engine, "job": run_job}
    result = runners[args.child](args)
    print("RESULT " + json.dumps(result), flush=True)


def spawn(which: str, args: argparse.Namespace, out: Path, precision: str = "fp32") -> dict:
    cmd = [
        sys.executable, __file__, "--child", which, "--out", str(out), "--precision", precision,
        "--content", args.content, "--style-file", args.style_file, "--size", str(args.size),
        "--pastiche-steps", str(args.pastiche_steps), "--quality", args.quality,
        "--style", args.style,
    ]  # fmt: skip
    if args.iterations is not None:
        cmd += ["--iterations", str(args.iterations)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", default=str(ROOT / "samples" / "chelsea.png"))
    parser.add_argument("--style", default="starry-night", help="built-in name or image path")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--pastiche-steps", type=int, default=300)
    parser.add_argument("--quality", default="standard")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep both outputs in")
    parser.add_argument("--only", choices=("pastiche", "engine"), default=None)
    parser.add_argument(
        "--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"]
    )
    parser.add_argument("--default-job", action="store_true", help="time the product's job")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of --default-job")
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("pastiche", "engine", "job"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--style-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.precisions_given = "--precisions" in sys.argv
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = args.keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        style_file = tmp / "style.png"
        _style_image(args.style).save(style_file)
        args.style_file = str(style_file)
        if args.default_job:
            default_job(args, tmp)
            return
        import torch

        from nst_engine.precision import use_bf16

        auto = "bf16" if use_bf16(torch.device("cpu"), "auto") else "fp32"
        print(f"content {args.content}, style {args.style}, {args.size} px long side, "
              f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}, "
              f"auto precision here: {auto}")  # fmt: skip
        runs = [("pastiche", "pastiche", "fp32")]
        runs += [(f"engine-{p}", "engine", p) for p in args.precisions]
        rows = {}
        for label, which, precision in runs:
            if args.only and which != args.only:
                continue
            out = tmp / f"{label}.png"
            stats = spawn(which, args, out, precision)
            extra = f"  [{stats['schedule']}]" if "schedule" in stats else ""
            print(
                f"{label:11s} wall {stats['wall']:7.1f} s  optimise {stats['optimise']:7.1f} s  "
                f"steps {stats['steps']:4d}  {stats['optimise'] / stats['steps']:.3f} s/step  "
                f"CPU {stats['cpu']:7.1f} s (optimise {stats['optimise_cpu']:7.1f} s)  "
                f"peak RSS {stats['rss']:6.0f} MiB{extra}",
                flush=True,
            )
            rows[label] = stats
        for label, stats in rows.items():
            stats["loss"] = evaluate(tmp / f"{label}.png", args.content, args.style_file)
            print(f"{label:11s} evaluator loss {stats['loss']:.5g}", flush=True)
        if "engine-fp32" in rows and "engine-bf16" in rows:
            f, b = rows["engine-fp32"], rows["engine-bf16"]
            print(
                f"bf16/fp32: optimise wall {b['optimise'] / f['optimise']:.2f}x, "
                f"optimise CPU {b['optimise_cpu'] / f['optimise_cpu']:.2f}x, "
                f"loss {b['loss'] / f['loss']:.4f}x"
            )
        for label in [k for k in rows if k.startswith("engine") and "pastiche" in rows]:
            p, e = rows["pastiche"], rows[label]
            print(
                f"{label}/pastiche: wall {e['wall'] / p['wall']:.2f}x, "
                f"CPU {e['cpu'] / p['cpu']:.2f}x, "
                f"optimise wall {e['optimise'] / p['optimise']:.2f}x, "
                f"optimise CPU {e['optimise_cpu'] / p['optimise_cpu']:.2f}x, "
                f"loss {e['loss'] / p['loss']:.3f}x"
            )


if __name__ == "__main__":
    main()
