"""The `crbm` command: generate, import, inspect recordings; manage the atlas reference files.

Errors caused by input print one readable line (`error: <file>:<dataset>: <problem>`) and exit
with status 2; nothing is written on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import ParameterError

DEMO = dict(n_neurons=3000, n_frames=3000, n_assemblies=24, seed=2023, frame_rate=4.0)


def data_dir() -> Path:
    """The data directory: $CRBM_DATA_DIR, else ./data."""
    return Path(os.environ.get("CRBM_DATA_DIR", "data"))


def demo_path() -> Path:
    return data_dir() / "demo_fish.h5"


def ensure_demo(path: Path | None = None, quiet: bool = False) -> Path:
    """Generate the demo virtual fish if it is not there yet."""
    from .synthetic import generate_virtual_fish, save_virtual_fish

    path = path or demo_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not quiet:
            print(f"generating the demo virtual fish at {path} ...", file=sys.stderr)
        save_virtual_fish(generate_virtual_fish(**DEMO, name="demo virtual fish"), path)
    return path


def _print_summary(summary: dict) -> None:
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        print(f"{key:<{width}}  {value}")


def cmd_demo(args) -> int:
    from .recording import read_recording

    path = ensure_demo()
    _print_summary(read_recording(path).summary())
    return 0


def cmd_generate(args) -> int:
    from .synthetic import generate_virtual_fish, save_virtual_fish

    fish = generate_virtual_fish(
        args.neurons,
        args.frames,
        args.assemblies,
        seed=args.seed,
        mode=args.mode,
        frame_rate=args.frame_rate,
    )
    save_virtual_fish(fish, args.output)
    _print_summary(fish.recording.summary())
    print(f"wrote {args.output}")
    return 0


def cmd_import(args) -> int:
    from .ljp import import_ljp
    from .recording import read_recording

    out = import_ljp(
        args.source,
        args.output,
        region_labels=args.region_labels,
        frame_rate=args.frame_rate,
        orientation=args.orientation,
        name=args.name,
    )
    _print_summary(read_recording(out).summary())
    print(f"wrote {out}")
    return 0


def cmd_info(args) -> int:
    from .ljp import inspect_ljp
    from .recording import is_recording_file, read_recording

    if is_recording_file(args.file):
        summary = read_recording(args.file).summary()
    else:
        layout = inspect_ljp(args.file)
        summary = {
            "layout": "LJP/Fishualizer (import with `crbm import`)",
            "cells": layout.n_cells,
            "frames": layout.n_frames,
            "whole_brain_neurons": int(layout.keep.size),
            "spikes_stored": "cells × time" if layout.cells_first else "time × cells",
            "coordinates": layout.coords_space,
            "datasets": layout.paths,
        }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return 0


def cmd_atlas(args) -> int:
    from . import atlas

    if args.action == "fetch":
        dest = atlas.fetch(
            Path(args.dest) if args.dest else None, fish_labels=args.with_fish_labels
        )
        print(f"atlas reference files are in {dest}")
        if args.dest and Path(args.dest).resolve() != atlas.atlas_dir().resolve():
            print(f"set {atlas.ATLAS_DIR_ENV}={dest} to use them")
        return 0
    print(f"atlas directory: {atlas.atlas_dir()}")
    for key, ok in atlas.available().items():
        print(f"  {key:<16} {'installed' if ok else 'missing'}")
    return 0


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig parameter (the config is the single source of truth)."""
    import param

    from .train import TrainConfig

    for name, p in TrainConfig.param.objects("existing").items():
        if name == "name":
            continue
        flag = "--" + name.replace("_", "-")
        doc = (p.doc or "").split(". ")[0].replace("%", "%%")
        if isinstance(p, param.Boolean):
            parser.add_argument(
                flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=doc
            )
        elif isinstance(p, param.Selector):
            parser.add_argument(flag, dest=name, default=None, choices=p.objects, help=doc)
        else:
            kind = int if isinstance(p, param.Integer) else float
            parser.add_argument(
                flag,
                dest=name,
                default=None,
                type=kind,
                help=f"{doc} (default: {p.default if p.default is not None else 'auto'})",
            )


def cmd_train(args) -> int:
    import signal

    from tqdm import tqdm

    from .modelfile import save_checkpoint
    from .recording import read_recording
    from .run_inputs import save_result, training_inputs
    from .train import TrainConfig, train

    rec = read_recording(args.recording)
    options = _config_options(args)
    inputs = training_inputs(rec, args.recording, args.resume, args.all_frames)
    if inputs.note:
        print(f"warning: {inputs.note}", file=sys.stderr)
    state, config = inputs.state, inputs.config
    if args.resume:
        config.param.update(**{k: v for k, v in options.items() if k == "n_updates"})
    else:
        config = TrainConfig(**options)
    out = Path(args.output or args.resume)
    provenance = inputs.provenance
    if inputs.split is not None and not args.quiet:
        print(f"split: {provenance['split']}", file=sys.stderr)
    stop = {"now": False}

    def on_sigint(signum, frame):
        stop["now"] = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    bar = tqdm(
        total=config.n_updates,
        initial=state.update if state else 0,
        unit="upd",
        disable=args.quiet,
        dynamic_ncols=True,
    )

    def progress(event):
        bar.update(event["update"] - bar.n)
        bar.set_postfix(
            rmse_v=f"{event['rmse_v']:.4f}",
            w_std=f"{event['w_std']:.3f}",
            sparsity=f"{event['sparsity']:.3f}",
            lr=f"{event['lr']:.1e}",
        )

    def checkpoint(st, cfg):
        save_checkpoint(out, st, config, cfg, provenance=provenance, split=inputs.split)

    try:
        result = train(
            inputs.data,
            config,
            state=state,
            callback=progress,
            checkpoint=checkpoint,
            should_stop=lambda: stop["now"],
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    save_result(out, result, config, inputs)
    if result.status == "stopped":
        print(
            f"interrupted at update {result.state.update}; checkpoint in {out}; continue with "
            f"`crbm train {args.recording} --resume {out}`",
            file=sys.stderr,
        )
        return 130
    print(
        f"{result.status}: {result.state.update} updates in {result.state.elapsed:.0f} s; "
        f"model in {out}" + (f" ({result.message})" if result.message else "")
    )
    return 0


def cmd_evaluate(args) -> int:
    from .report import evaluate_model_file

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"· {msg}", file=sys.stderr, flush=True)

    out, sections = evaluate_model_file(
        args.model, args.recording, args.output, seed=args.seed, progress=say
    )
    ev = sections["evaluation"]["values"]
    print(f"{'statistic':<10} {'nRMSE':>7} {'r':>6}")
    for k, stat in ev["statistics"].items():
        nr = stat["nrmse"] if stat["nrmse"] is not None else float("nan")
        r = stat["pearson_r"] if stat["pearson_r"] is not None else float("nan")
        print(f"{k:<10} {nr:>7.3f} {r:>6.3f}")
    glm = sections["baselines"]["values"]["glm_median_nllh"]
    print(
        f"score min(1 − nRMSE) {_num(ev['score'])}; median nLLH {_num(ev['median_nllh'])} "
        f"(GLM {_num(glm)})"
    )
    conn = sections["connectivity"]["values"]
    if conn.get("sc_available"):
        print(
            f"FC vs SC Spearman r: cRBM {_num(conn.get('crbm_spearman_r'))}, correlation "
            f"{_num(conn.get('correlation_spearman_r'))}, covariance "
            f"{_num(conn.get('covariance_spearman_r'))}"
        )
    print(f"report in {out}")
    return 0


def _num(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def cmd_report(args) -> int:
    from .report import load_report, report_path

    source = Path(args.model)
    path = source if source.name.endswith(".report.h5") else report_path(source)
    if not path.exists():
        print(
            f"error: {path} does not exist; run `crbm evaluate {args.model}` first",
            file=sys.stderr,
        )
        return 2
    from app.report_html import write_html

    out = write_html(load_report(path), args.html)
    print(f"wrote {out}")
    return 0


def _config_options(args) -> dict:
    """The TrainConfig parameters given on the command line (`_add_config_options`)."""
    from .train import TrainConfig

    return {
        k: getattr(args, k)
        for k in TrainConfig.param.objects("existing")
        if k != "name" and getattr(args, k, None) is not None
    }


def _grid_option(text: str) -> tuple[str, list]:
    """`--grid l1=0.01,0.02` → ("l1", [0.01, 0.02]), values typed as the parameter is."""
    import param

    from .train import TrainConfig

    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    p = TrainConfig.param.objects("existing").get(name)
    if not sep or p is None or name == "name" or not values.strip():
        raise ParameterError(
            f"--grid {text!r}: expected NAME=V1,V2,... with NAME a training parameter"
        )
    kind = (
        int
        if isinstance(p, param.Integer)
        else str
        if isinstance(p, param.Selector)
        else (lambda x: x.lower() in ("1", "true", "yes"))
        if isinstance(p, param.Boolean)
        else float
    )
    try:
        return name, [kind(v.strip()) for v in values.split(",")]
    except ValueError:
        raise ParameterError(f"--grid {text!r}: a value is not a valid {name}") from None


def _print_sweep(store, sweep_id: int) -> None:
    from app.sweeps import STATISTICS, results_table

    sweep = store.sweep(sweep_id)
    rows = results_table(store, sweep_id)
    grid = [*sweep["spec"].get("grid", {}), *([] if "seed" in sweep["spec"]["grid"] else ["seed"])]
    print(f"sweep {sweep_id} ({sweep['name']}): {len(rows)} runs")
    head = ["run", "recording", *grid, "status", *[f"nRMSE {s}" for s in STATISTICS]]
    head += ["score", "std(w)", "selected"]
    print("  ".join(f"{h:>10}" for h in head))
    for r in rows:
        cells = [r["run"], r["recording"][:10], *[r[g] for g in grid], r["status"]]
        cells += [_num(r[f"nrmse_{s}"]) for s in STATISTICS]
        cells += [_num(r["score"]), _num(r["w_std"]), "*" if r["selected"] else ""]
        print("  ".join(f"{str(c):>10}" for c in cells))
    print(
        "selection: per recording, the highest score min(1 − nRMSE) among runs with "
        "0.01 < std(w) < 0.1 (the paper's convergence filter)"
    )


def cmd_jobs(args) -> int:
    """Drive the run store's job manager (the one the dashboard uses) from the shell. Every call
    first starts queued runs into free slots and marks runs whose worker died "interrupted";
    workers run in their own sessions, so they outlive this command."""
    from app.jobs import JobManager

    from .train import TrainConfig

    manager = JobManager(data_dir(), max_workers=args.max_workers)
    manager.poll()
    store = manager.store
    if args.action == "submit":
        run_id = manager.submit(args.recording, TrainConfig(**_config_options(args)))
        started = manager.spawned(run_id)
        print(f"run {run_id}: {'started' if started else store.run(run_id)['status']}")
    elif args.action == "sweep":
        grid = dict(_grid_option(text) for text in args.grid or [])
        sweep_id = manager.submit_sweep(
            args.recordings, _config_options(args), grid, args.repeats, name=args.name or ""
        )
        runs = store.sweep_runs(sweep_id)
        started = sum(manager.spawned(r["id"]) for r in runs)
        print(f"sweep {sweep_id}: {len(runs)} runs queued ({started} started)")
    elif args.action == "results":
        _print_sweep(store, args.sweep)
    elif args.action == "cancel":
        print(f"run {args.run}: {manager.cancel(args.run)}")
    elif args.action == "resume":
        manager.resume(args.run)
        started = manager.spawned(args.run)
        print(f"run {args.run}: {'started' if started else store.run(args.run)['status']}")
    else:
        runs = store.runs()
        names = {r["id"]: r["name"] for r in store.recordings()}
        print(f"{'run':>4}  {'status':<14} {'checkpoint':>10}  {'recording':<24} message")
        for r in runs:
            ckpt = "" if r["checkpoint_update"] is None else str(r["checkpoint_update"])
            rec = str(names.get(r["recording_id"], r["recording_id"]))[:24]
            print(f"{r['id']:>4}  {r['status']:<14} {ckpt:>10}  {rec:<24} {r['message']}")
    return 0


def cmd_serve(args) -> int:
    """Run the dashboard as `panel serve app/main.py` (the command the browser tests run) with
    the data directory in $CRBM_DATA_DIR; returns when the server stops."""
    import socket
    import subprocess

    from app.server import serve_command

    with socket.socket() as probe:  # before the app's first start runs, not after
        try:
            probe.bind((args.address, args.port))
        except OSError as exc:
            print(f"error: cannot serve on {args.address}:{args.port}: {exc}", file=sys.stderr)
            return 2

    env = dict(os.environ)
    if args.data_dir:
        env["CRBM_DATA_DIR"] = str(Path(args.data_dir).resolve())
    cmd = serve_command(args.port, args.address, args.allow_websocket_origin)
    where = env.get("CRBM_DATA_DIR", "data")
    print(f"crbm-explorer dashboard: http://{args.address}:{args.port}/main (data in {where})")
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crbm", description="compositional RBMs on whole-brain recordings (crbm-explorer)"
    )
    p.add_argument("--version", action="version", version=f"crbm-explorer {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo", help="generate the demo virtual fish if absent, print its summary")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("generate", help="write a virtual fish with known ground truth")
    s.add_argument("--neurons", type=int, default=3000)
    s.add_argument("--frames", type=int, default=4000)
    s.add_argument("--assemblies", type=int, default=30)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--mode", choices=["assemblies", "crbm"], default="assemblies")
    s.add_argument("--frame-rate", type=float, default=4.0, help="frames per second")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("import", help="convert an LJP/Fishualizer HDF5 file to our format")
    s.add_argument("source")
    s.add_argument("--region-labels", help="per-neuron 72-region labels (.npy, 0 = unlabelled)")
    s.add_argument("--frame-rate", type=float, help="frames per second, if the file has no times")
    s.add_argument(
        "--orientation", choices=["auto", "time_x_cells", "cells_x_time"], default="auto"
    )
    s.add_argument("--name")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("info", help="summarize a recording (ours or LJP layout)")
    s.add_argument("file")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("train", help="train a cRBM on a recording (live progress, checkpoints)")
    s.add_argument("recording")
    s.add_argument("-o", "--output", help="model file (also the checkpoint)")
    s.add_argument("--resume", help="continue the run stored in this model file")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument(
        "--all-frames",
        action="store_true",
        help="train on every frame (default: hold out 3 of 10 segments, METHODS §4)",
    )
    _add_config_options(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser(
        "evaluate", help="analyse a trained model (METHODS §4–8) into its report file"
    )
    s.add_argument("model", help="model file written by `crbm train`")
    s.add_argument("--recording", help="the training recording (default: from the model file)")
    s.add_argument("-o", "--output", help="report file (default: MODEL.report.h5 beside it)")
    s.add_argument("--seed", type=int, default=0, help="seed of the model sampling")
    s.add_argument("--quiet", action="store_true", help="no progress messages")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("report", help="write a standalone HTML report of an evaluated model")
    s.add_argument("model", help="model file (or its .report.h5)")
    s.add_argument("--html", required=True, help="output HTML file")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("jobs", help="background training runs in the run store ($CRBM_DATA_DIR)")
    s.add_argument("--max-workers", type=int, default=None, help="concurrent runs (default: cores)")
    s.set_defaults(func=cmd_jobs)
    jobs = s.add_subparsers(dest="action", required=True)
    jobs.add_parser("list", help="every run with its status")
    j = jobs.add_parser("submit", help="queue a training run (starts now if a slot is free)")
    j.add_argument("recording")
    _add_config_options(j)
    j = jobs.add_parser("sweep", help="queue a grid of runs (e.g. λ × M × repeats) as one sweep")
    j.add_argument("recordings", nargs="+")
    j.add_argument(
        "--grid",
        action="append",
        metavar="NAME=V1,V2",
        help="a training parameter and its values (repeat for more: --grid l1=0.01,0.02 "
        "--grid n_hidden=100,200)",
    )
    j.add_argument("--repeats", type=int, default=1, help="runs per grid point (seeds differ)")
    j.add_argument("--name", help="a name for the sweep")
    _add_config_options(j)
    j = jobs.add_parser("results", help="a sweep's results table and its selected models")
    j.add_argument("sweep", type=int)
    for action in ("cancel", "resume"):
        j = jobs.add_parser(action, help=f"{action} a run")
        j.add_argument("run", type=int)

    s = sub.add_parser("serve", help="start the dashboard (demo fish pre-trained on first start)")
    s.add_argument("--port", type=int, default=5006)
    s.add_argument("--address", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    s.add_argument("--data-dir", help="data directory (default: $CRBM_DATA_DIR, else ./data)")
    s.add_argument(
        "--allow-websocket-origin",
        action="append",
        help="host:port a browser may connect from (repeatable; default: the address and port)",
    )
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("atlas", help="atlas reference files: show status or fetch them")
    s.add_argument("action", choices=["status", "fetch"], nargs="?", default="status")
    s.add_argument("--dest", help="where to put them (default: the atlas directory)")
    s.add_argument(
        "--with-fish-labels",
        action="store_true",
        help="also fetch the 11 real fish's per-neuron region labels",
    )
    s.set_defaults(func=cmd_atlas)
    return p


def main(argv: list[str] | None = None) -> int:
    from . import atlas
    from .errors import CrbmError

    args = build_parser().parse_args(argv)
    if args.command == "train" and not (args.output or args.resume):
        print("error: train needs -o MODEL.h5 (or --resume MODEL.h5)", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (
        CrbmError,
        atlas.AtlasFileMissing,
        atlas.AtlasFetchError,
        atlas.AtlasFormatError,
        atlas.UnknownRegionError,
        FileNotFoundError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
