"""``pipeline models add|list|publish|serve``: the cloud's model registry and staged rollout."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.cli_support import add_override
from pipeline.errors import ConfigError
from pipeline.model_signing import signed
from pipeline.operators.chunk_codec import mqtt_url
from pipeline.settings import EdgeSettings, Settings

HELP = """\
A registry directory (registry.dir) holds model versions: <name>/<version>/<file> + meta.json
(sha256, size, labels, input size, minimum edge version). `serve` makes it downloadable over
HTTP (Range requests, so an edge resumes a broken download). `publish` sends a camera config
record {"model": {name, version, sha256, size, url}} through the Kafka config topic (the same
path as `pipeline config set`); the edge downloads in the background, checks size and sha256,
loads the file in a shadow interpreter, smoke-tests it on a frame and swaps it in between two
frames; any failure keeps the old model and is reported on the camera's status topic, whose
"model" field shows which camera runs which version. Rollback: publish the previous version
again (it is still on the edge's disk) or `--default` for the packaged model.

Sites that reach only the broker: `publish --via mqtt` (or `push-chunks` ahead of time) offers
the version as retained chunks on MQTT (<prefix>/models/<name>/<version>/<index> + manifest) and
the reference's url becomes mqtt://models/<name>/<version>; `clear-chunks` removes an old
version's chunks from the broker.
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("models", help="Model registry: add, list, serve, publish to cameras.",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True

    def reg_dir(parser: argparse.ArgumentParser) -> None:
        add_override(parser, "--registry", path="registry.dir", type=Path, metavar="DIR", help="Registry directory.")

    add = sub.add_parser("add", help="Register a model file as NAME@VERSION.")
    add.add_argument("file", type=Path, help="Model file (.tflite).")
    add.add_argument("--name", required=True)
    add.add_argument("--version", required=True)
    add.add_argument("--labels", default="coco80", help="Label set of the class ids (default coco80).")
    add.add_argument("--input-size", metavar="W,H", help="Model input size; read from the file when omitted.")
    add.add_argument("--min-edge-version", default="0", help="Oldest edge software version that can run it.")
    reg_dir(add)
    add.set_defaults(func=_run_add)

    ls = sub.add_parser("list", help="List registered versions.")
    ls.add_argument("--json", action="store_true")
    reg_dir(ls)
    ls.set_defaults(func=_run_list)

    serve = sub.add_parser("serve", help="Serve the registry over HTTP for the edges (Range requests).")
    reg_dir(serve)
    add_override(serve, "--host", path="registry.host", metavar="HOST", help="Bind address.")
    add_override(serve, "--port", path="registry.port", type=int, metavar="PORT", help="Port.")
    serve.set_defaults(func=_run_serve)

    pub = sub.add_parser("publish", help="Roll NAME VERSION out to cameras of a site (list or percentage).")
    pub.add_argument("name", nargs="?")
    pub.add_argument("version", nargs="?")
    pub.add_argument("--site", required=True)
    pub.add_argument("--cameras", help="Comma list of camera ids (the candidates with --percent).")
    pub.add_argument("--percent", type=float, help="Share of cameras (deterministic by camera id hash).")
    pub.add_argument("--default", action="store_true", help="Send the cameras back to their packaged model.")
    pub.add_argument("--dry-run", action="store_true", help="Print the records, send nothing.")
    reg_dir(pub)
    add_override(pub, "--base-url", path="registry.base_url", metavar="URL", help="URL the edges download from.")
    add_override(pub, "--bootstrap-servers", path="kafka.bootstrap_servers", metavar="SERVERS", help="Kafka.")
    add_override(pub, "--via", path="registry.via", choices=("http", "mqtt"),
                 help="http: edges download from --base-url; mqtt: retained chunks on the broker (pushed first"
                      " unless the broker already has this version's manifest).")  # fmt: skip
    chunk_flag(pub)
    pub.set_defaults(func=_run_publish)

    push = sub.add_parser("push-chunks", help="Offer NAME VERSION as retained chunks on MQTT (sites without HTTP).")
    push.add_argument("name")
    push.add_argument("version")
    reg_dir(push)
    chunk_flag(push)
    push.set_defaults(func=_run_push_chunks)

    clear = sub.add_parser("clear-chunks", help="Remove NAME VERSION's retained chunks from the broker.")
    clear.add_argument("name")
    clear.add_argument("version")
    reg_dir(clear)
    clear.set_defaults(func=_run_clear_chunks)


def chunk_flag(parser: argparse.ArgumentParser) -> None:
    add_override(parser, "--chunk-bytes", path="registry.chunk_bytes", type=int, metavar="N",
                 help="Chunk size over MQTT (16 KiB..1 MiB).")  # fmt: skip


def _registry(settings: Settings) -> Any:
    from pipeline.model_registry.registry import ModelRegistry

    return ModelRegistry(settings.registry.dir)


def _run_add(args: argparse.Namespace, settings: Settings) -> int:
    size = None
    if args.input_size:
        try:
            w, h = (int(v) for v in args.input_size.split(","))
        except ValueError as exc:
            raise ConfigError(f"--input-size W,H, got {args.input_size!r}") from exc
        size = (w, h)
    entry = _registry(settings).add(args.file, args.name, args.version, labels=args.labels, input_size=size,
                                    min_edge_version=args.min_edge_version)  # fmt: skip
    print(
        f"added {entry.tag} sha256={entry.sha256} size={entry.size} input={entry.input_size[0]}x{entry.input_size[1]}"
    )
    return 0


def _run_list(args: argparse.Namespace, settings: Settings) -> int:
    entries = _registry(settings).entries()
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    for e in entries:
        print(f"{e.tag:40s} {e.size:>10d} B  sha256={e.sha256[:16]}…  {e.labels} {e.input_size[0]}x{e.input_size[1]}"
              f"  edge>={e.min_edge_version}  {e.file}")  # fmt: skip
    if not entries:
        print(f"(registry {settings.registry.dir} is empty)")
    return 0


def _run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.model_registry.file_server import RegistryServer

    r = settings.registry
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with RegistryServer(_registry(settings), r.host, r.port) as server:
        print(f"serving {r.dir} on {server.url} (GET /models.json, /models/<name>/<version>/<file>)", flush=True)
        stop.wait()
    print("registry server stopped", flush=True)
    return 0


def publish_records(
    settings: Settings,
    site: str,
    name: str | None,
    version: str | None,
    *,
    cameras: list[str] | None = None,
    percent: float | None = None,
    default: bool = False,
    via: str | None = None,
) -> list[tuple[str, bytes]]:
    """The config records of a rollout: ``(camera, value)``; ConfigError when nothing is selected."""
    from pipeline.cloud_stage.command import config_record
    from pipeline.model_registry.registry import model_ref
    from pipeline.model_registry.rollout import discover_cameras, model_config, select_cameras

    try:
        EdgeSettings.model_validate({"site": site})
    except ValueError as exc:
        raise ConfigError(f"bad --site: {exc}") from exc
    if percent is not None and not 0 <= percent <= 100:
        raise ConfigError("--percent must be within 0..100")
    if default:
        ref = None
    else:
        if not name or not version:
            raise ConfigError("give NAME VERSION, or --default")
        ref = model_ref(_registry(settings).get(name, version), settings.registry.url())
        if (via or settings.registry.via) == "mqtt":
            ref = ref.model_copy(update={"url": mqtt_url(name, version)})
        ref = signed(ref, settings.registry.signing_key)
    candidates = cameras if cameras else sorted(discover_cameras(settings, site))
    if not candidates:
        raise ConfigError(f"no cameras: give --cameras, or no camera of site {site} has a retained status")
    chosen = select_cameras(candidates, percent)
    if not chosen:
        raise ConfigError(f"{percent}% of {len(candidates)} cameras selects none; raise --percent")
    return [(cam, config_record(site, cam, model_config(ref))) for cam in chosen]


def _run_publish(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cloud_stage.command import produce_configs

    cams = [c.strip() for c in args.cameras.split(",") if c.strip()] if args.cameras else None
    records = publish_records(settings, args.site, args.name, args.version, cameras=cams, percent=args.percent,
                              default=args.default)  # fmt: skip
    if args.dry_run:
        for cam, value in records:
            print(f"{cam} {value.decode()}")
        return 0
    if settings.registry.via == "mqtt" and not args.default:
        _ensure_chunks(settings, args.name, args.version)
    for line in produce_configs(settings, records):
        print(line)
    print(f"published to {len(records)} camera(s): {', '.join(c for c, _ in records)}")
    return 0


def _ensure_chunks(settings: Settings, name: str, version: str) -> None:
    """Push the chunks unless the broker already keeps this very file's manifest (the manifest is
    published last and cleared first, so its presence means every chunk is there)."""
    from pipeline.model_registry.chunk_push import retained_manifest

    entry = _registry(settings).get(name, version)
    have = retained_manifest(settings.mqtt, name, version)
    if have is not None and have.sha256 == entry.sha256 and have.size == entry.size:
        print(f"{entry.tag}: {have.chunks} chunks already on the broker", flush=True)
        return
    _push(settings, name, version)


def _push(settings: Settings, name: str, version: str) -> None:
    from pipeline.model_registry.chunk_push import push_chunks

    reg = _registry(settings)
    entry = reg.get(name, version)
    r = push_chunks(settings.mqtt, entry, reg.path_of(entry), settings.registry.chunk_bytes)
    m = r.manifest
    print(f"pushed {entry.tag}: {m.chunks} chunks of {m.chunk_size} B ({m.size} B) retained on {r.topic}"
          f" in {r.seconds:.2f} s", flush=True)  # fmt: skip


def _run_push_chunks(args: argparse.Namespace, settings: Settings) -> int:
    _push(settings, args.name, args.version)
    return 0


def _run_clear_chunks(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.model_registry.chunk_push import clear_chunks

    try:
        size: int | None = _registry(settings).get(args.name, args.version).size
    except ConfigError:
        size = None  # removed from the registry: the retained manifest must say how many
    n = clear_chunks(settings.mqtt, args.name, args.version, size)
    print(f"cleared {n} retained topics of {args.name}@{args.version}")
    return 0
