"""The server's one configuration: :class:`ServeConfig`, and the command-line options that fill it.

``altdiffusion serve`` and ``python -m altdiffusion.serve`` both call
:func:`add_serve_arguments` and :func:`config_from_args`, so they take the same options.
The CLI imports this module while it builds its parser: keep it free of heavy imports
(torch, diffusers, fastapi).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from altdiffusion.cli.common import add_device_arguments, add_performance_arguments
from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.modes import check_modes

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
# Descriptors the server holds besides its connections: the listening socket, the event loop's,
# logs, model files being read, a worker's pipes.
FILE_RESERVE = 128
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

# (field, help) of every limit: each becomes an option (--max-steps, --header-timeout...) checked by validate().
LIMITS = (
    ("max_queue", "waiting requests before the server answers 429"),
    ("max_pixels", "largest width x height of a generated image"),
    ("max_steps", "most sampling steps a request may ask for"),
    ("max_batch", "most images (batch_size x n_iter) per request"),
    ("max_body_bytes", "largest request body in bytes (413 above it)"),
    ("max_images", "most images (init_images + mask) in one request"),
    ("max_input_pixels", "most pixels of all images in one request together, read from their headers"),
    ("max_job_seconds", "longest a job may run before it is stopped with a 503"),
    ("max_lora_tags", "most <lora:...> tags in one prompt"),
    ("max_connections", "open connections; more are refused with 503 at once"),
    ("header_timeout", "seconds a client has to send a request's headers"),
    ("body_timeout", "seconds a client has to send a request's body once its headers are in"),
    ("keep_alive_timeout", "seconds an idle keep-alive connection stays open"),
)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass
class ServeConfig:
    """What a server serves, where, and within which limits.

    ``models`` maps a configured name to a model folder, hub id or ``"mini"``; requests
    name models only by these names. ``default`` is loaded first (None: the first model).
    """

    models: Mapping[str, str | Path]
    default: str | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    api_auth: str | None = None  # "user:password" for HTTP Basic auth on every route
    device: Any = None  # "cpu", "cuda", a torch.device...; None: the best available
    dtype: Any = None  # "fp16", a torch.dtype...; None: devices.select_generation_dtype's choice
    safety_checker: bool = True
    compile: bool = False  # speed mode (pipelines/speed.py); each loaded model warms up at its native size
    memory: str = "full"  # "full", "balanced" or "low" (pipelines/memory.py)
    lora_dir: str | Path | None = None  # LoRA files prompts may name with <lora:name:weight>
    vaes: Mapping[str, str | Path] = field(default_factory=dict)  # name -> VAE file/folder (A1111's sd_vae)
    config: str | Path | None = None  # the architecture of single-file models not in the published shapes
    embeddings_dir: str | Path | None = None  # textual-inversion files; a file's stem is its trigger word
    ui: bool = True  # serve the web UI at /
    preload: bool = True  # load the default model before serving (else with the first job)
    log_level: str = "info"
    max_queue: int = 8
    max_pixels: int = 1024 * 1024
    max_steps: int = 150
    max_batch: int = 8
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_images: int = 8
    max_input_pixels: int = 2 * 4096 * 4096
    max_job_seconds: int = 600
    max_lora_tags: int = 16
    max_connections: int = 64
    header_timeout: int = 10
    body_timeout: int = 60
    keep_alive_timeout: int = 5
    # Host header names served ("*": any); empty: loopback names plus the bound host (DNS rebinding guard)
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()  # origins a browser may call the API from (CORS); empty: same origin only

    @property
    def default_model(self) -> str:
        return self.default if self.default is not None else next(iter(self.models))

    @property
    def host_names(self) -> tuple[str, ...]:
        """The Host header names this server answers to (``("*",)``: any)."""
        if self.allowed_hosts:
            return tuple(self.allowed_hosts)
        bound = () if self.host in ("0.0.0.0", "::", "") else (self.host,)
        return tuple(dict.fromkeys((*LOOPBACK_HOSTS, *bound)))

    def validate(self) -> ServeConfig:
        """This configuration, or an InvalidInputError whose one line says what to fix."""
        _check_models(self.models, self.default)
        check_modes(self.compile, self.memory)
        for name, _ in LIMITS:
            _check_positive(name, getattr(self, name))
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise InvalidInputError(f"port (--port) must be a whole number from 0 to 65535, got {self.port!r}")
        if self.api_auth is not None:
            _check_api_auth(self.api_auth)
        for name, source in self.vaes.items():
            if not Path(source).exists():
                raise InvalidInputError(f"VAE {name!r} (--vae): {source} does not exist")
        if self.lora_dir is not None and not Path(self.lora_dir).is_dir():
            raise InvalidInputError(f"lora_dir (--lora-dir) {self.lora_dir} is not a folder")
        for name in ("allowed_hosts", "cors_origins"):
            _check_names(name, getattr(self, name))
        if self.embeddings_dir is not None and not Path(self.embeddings_dir).is_dir():
            raise InvalidInputError(f"embeddings_dir (--embeddings-dir) {self.embeddings_dir} is not a folder")
        _check_open_files(self.max_connections)
        if self.log_level not in LOG_LEVELS:
            raise InvalidInputError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        return self


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"{name} ({_option(name)}) must be a whole number >= 1, got {value!r}")


def open_files_allowed() -> int | None:
    """The most files this process may ever open (the hard RLIMIT_NOFILE); None: no limit known."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def _check_open_files(max_connections: int) -> None:
    allowed = open_files_allowed()
    if allowed is not None and max_connections + FILE_RESERVE > allowed:
        raise InvalidInputError(
            f"max_connections (--max-connections) {max_connections} needs about {max_connections + FILE_RESERVE} "
            f"open files, but this process may open {allowed} (ulimit -Hn); lower --max-connections to at most "
            f"{max(allowed - FILE_RESERVE, 0)} or raise the limit"
        )


def _check_names(name: str, values: object) -> None:
    if isinstance(values, str) or not all(isinstance(v, str) and v.strip() for v in values):
        raise InvalidInputError(f"{name} ({_option(name)}) must be a list of non-empty names, got {values!r}")


def _check_models(models: object, default: str | None) -> None:
    if not isinstance(models, Mapping) or not models:
        raise InvalidInputError("no model given; configure at least one (name -> model folder, hub id or 'mini')")
    for name, source in models.items():
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"model names must be non-empty strings, got {name!r}")
        if not isinstance(source, (str, Path)) or not str(source).strip():
            raise InvalidInputError(f"model {name!r}: expected a folder, hub id or 'mini', got {source!r}")
    if default is not None and default not in models:
        raise InvalidInputError(f"default model {default!r} is not one of the configured models: {', '.join(models)}")


def _check_api_auth(api_auth: object) -> None:
    user, sep, password = api_auth.partition(":") if isinstance(api_auth, str) else ("", "", "")
    if not (sep and user and password):
        raise InvalidInputError("api_auth (--api-auth) must have the form user:password, both non-empty")


# ----------------------------------------------------------------------------- models


def model_name_of(source: str | Path) -> str:
    """The configured name for a model given only by its folder / hub id: its last path part."""
    text = str(source).rstrip("/\\")
    return Path(text).name or text


def models_from(model: object) -> dict[str, str | Path]:
    """``{name: source}`` from a folder / hub id / ``"mini"``, a list of them, or a mapping."""
    if isinstance(model, Mapping):
        return dict(model)
    if isinstance(model, (str, Path)):
        return {model_name_of(model): model}
    if isinstance(model, Sequence):
        return {model_name_of(m): m for m in model}
    raise InvalidInputError(f"model must be a folder, hub id, 'mini', or a mapping of name -> model; got {model!r}")


def parse_model_option(text: str) -> tuple[str, str]:
    """``--model NAME=MODEL`` or ``--model MODEL`` (named after its last path part)."""
    name, sep, source = text.partition("=")
    if sep and name and source and not Path(text).exists():
        return name, source
    return model_name_of(text), text


def _named_vae(text: str) -> tuple[str, str]:
    """``--vae NAME=PATH`` or ``--vae PATH`` (named by its file or folder name, as A1111 lists VAEs)."""
    name, sep, source = text.partition("=")
    if sep and name and source and not Path(text).exists():
        return name, source
    return Path(text.rstrip("/\\")).name, text


# ----------------------------------------------------------------------------- command line


def _whole_number(text: str) -> int:
    try:
        return int(text)  # the range is checked by ServeConfig.validate, with its one-line message
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The server's options, on ``parser`` (the ``serve`` subcommand or ``python -m altdiffusion.serve``)."""
    defaults = {f.name: f.default for f in fields(ServeConfig)}
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="[NAME=]MODEL",
        help="model folder, single file (.safetensors/.ckpt, A1111 layout), hub id or 'mini'; "
        "repeat to offer several, the first is loaded (default: mini)",
    )
    parser.add_argument(
        "--vae",
        action="append",
        default=None,
        metavar="[NAME=]FILE|FOLDER",
        help="a VAE clients may choose with the sd_vae option (A1111 file or diffusers folder); repeatable",
    )
    parser.add_argument(
        "--config", default=None, metavar="FOLDER", help="a diffusers folder giving single-file models' architecture"
    )
    parser.add_argument("--host", default=defaults["host"], help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=_whole_number, default=defaults["port"], help="0 picks a free port")
    parser.add_argument("--api-auth", default=None, metavar="USER:PASSWORD", help="require HTTP Basic credentials")
    parser.add_argument(
        "--lora-dir", default=None, help="folder of LoRA .safetensors files that prompts may name with <lora:name:w>"
    )
    parser.add_argument(
        "--embeddings-dir", default=None, help="folder of textual-inversion embeddings; a file's stem is its trigger"
    )
    add_device_arguments(parser, generation=True)
    parser.add_argument("--no-safety-checker", action="store_true", help="do not black out flagged images")
    add_performance_arguments(parser)
    parser.add_argument("--no-ui", action="store_true", help="serve the API only, no web UI at /")
    parser.add_argument("--log-level", default=defaults["log_level"], choices=LOG_LEVELS)
    parser.add_argument(
        "--allowed-hosts",
        type=_name_list,
        default=(),
        metavar="NAME,...",
        help="Host header names to answer, '*' for any (default: localhost, 127.0.0.1, ::1 and --host)",
    )
    parser.add_argument(
        "--cors-origins",
        type=_name_list,
        default=(),
        metavar="ORIGIN,...",
        help="origins (e.g. https://app.example) whose pages may call the API (default: none, same origin only)",
    )
    for name, help_text in LIMITS:
        default = defaults[name]
        parser.add_argument(
            _option(name), type=_whole_number, default=default, metavar="N", help=f"{help_text} (default: {default})"
        )
    return parser


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The validated configuration the parsed options describe."""
    config = ServeConfig(
        models=dict(parse_model_option(m) for m in (args.model or ["mini"])),
        host=args.host,
        port=args.port,
        api_auth=args.api_auth,
        device=args.device,
        dtype=args.dtype,
        safety_checker=not args.no_safety_checker,
        compile=args.compile,
        memory=args.memory,
        lora_dir=args.lora_dir,
        vaes=dict(_named_vae(v) for v in args.vae or []),
        config=args.config,
        embeddings_dir=args.embeddings_dir,
        ui=not args.no_ui,
        log_level=args.log_level,
        allowed_hosts=args.allowed_hosts,
        cors_origins=args.cors_origins,
        **{name: getattr(args, name) for name, _ in LIMITS},
    )
    return config.validate()
