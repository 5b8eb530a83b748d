"""A local Amazon Bedrock Runtime: `InvokeModel` over HTTP in the real restJson1 wire format.

boto3's `bedrock-runtime` client talks to it unchanged through `endpoint_url` or the
`AWS_ENDPOINT_URL_BEDROCK_RUNTIME` environment variable (SigV4 is accepted and ignored).
Requests are validated the way Bedrock validates them, errors arrive as the same botocore
exception codes, and responses have each model family's real shape, so handler code that runs
here runs unchanged against AWS. Two request families are served, each in its own shape:
Stability AI (`prompt`/`aspect_ratio` -> `seeds`/`finish_reasons`/`images`) and Amazon
(`taskType: TEXT_IMAGE`/`textToImageParams`/`imageGenerationConfig` -> `images`/`error`).

What differs from AWS, on purpose:

- Images are rendered by a local `Renderer` (the tiny random-weight model, or the null
  renderer that answers at once with a flat seed-coloured image for benchmarks) at a
  local scale: the requested aspect ratio with the short side `render_short_side` pixels and
  the long side rounded to a multiple of 8, in `render_steps` steps with classifier-free
  guidance `render_guidance` (0 turns it off, halving the work). 1:1 is 64x64 and 16:9 is
  112x64 by default. Point the renderer at a real model and raise these for real pictures.
- Faults can be injected for rehearsals: `throttle_rate` of requests get a 429
  ThrottlingException and `content_filter_rate` get a 200 whose image was filtered (each
  family's own refusal: a "Filter reason" finish reason, or an Amazon `error`), drawn from
  a generator seeded with `fault_seed`. Prompts containing a trigger in `PROMPT_TRIGGERS`
  (for example `[[throttle]]`, `[[filtered]]`) fail that way every time.
- A model's first use can be replayed: `deny_first_use(model_id, seconds)` answers
  AccessDeniedException (403, AWS's Marketplace message) from the model's first call until
  `seconds` later, as AWS does while it subscribes the account.
- `GET /_local/stats` (and `LocalBedrock.stats`) report counts, so tests can check that the
  ledger charges exactly the images Bedrock returned.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from PIL import Image

from imagebatch.models.bedrock_models import ModelSpec, load_catalogue
from imagebatch_local.fakes.loopback import serve_in_background, stop_serving
from imagebatch_local.fakes.renderers import RenderedImage, Renderer, RenderRequest

logger = logging.getLogger(__name__)

# botocore reads the error code from this header up to the first colon; AWS appends its
# internal namespace, kept here so raw captures look like the real thing.
ERROR_NAMESPACE = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
INVOKE_PATH = re.compile(r"^/model/(?P<model>[^/]+)/invoke$")
STATS_PATH = "/_local/stats"
# Foundation-model ARNs are accepted wherever a model id is, as on AWS.
MODEL_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:[\w-]*:\d*:foundation-model/(?P<id>.+)$")
# An application inference profile's ARN is accepted as a modelId once the local stack has
# said which model it copies (add_inference_profiles), as on AWS.
PROFILE_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:[\w-]*:\d+:application-inference-profile/\w+$")
INVALID_MODEL = "The provided model identifier is invalid."
END_OF_LIFE = (
    "This model version has reached the end of its life. "
    "Please refer to the AWS documentation for more details."
)
# AWS's answer while a first call's Marketplace subscription completes (CloudTrail captures).
FIRST_USE_DENIED = (
    "Model access is denied due to IAM user or service role is not authorized to perform the "
    "required AWS Marketplace actions (aws-marketplace:ViewSubscriptions, "
    "aws-marketplace:Subscribe) to enable access to this model. Refer to the Amazon Bedrock "
    "documentation for further details. Your AWS Marketplace subscription for this model "
    "cannot be completed at this time. If you recently fixed this issue, try again after 2 "
    "minutes."
)
THROTTLED = "Too many requests, please wait before trying again."
FILTER_REASON = "Filter reason: prompt"
# Amazon models (Titan Image v2, Nova Canvas): a blocked prompt is a ValidationException; a
# blocked output is a 200 whose `error` says so.
AMAZON_PROMPT_BLOCKED = (
    "This request has been blocked by our content filters. "
    "Please adjust your text prompt to submit a new request."
)
AMAZON_OUTPUT_BLOCKED = "All of the generated images have been blocked by our content filters."
AMAZON_KEYS = frozenset({"taskType", "textToImageParams", "imageGenerationConfig"})
AMAZON_TEXT_KEYS = frozenset({"text", "negativeText"})
AMAZON_CONFIG_KEYS = frozenset({"numberOfImages", "width", "height", "quality", "cfgScale", "seed"})
AMAZON_TASK_TYPES = ("TEXT_IMAGE",)
STABILITY_KEYS = frozenset(
    {
        "prompt",
        "negative_prompt",
        "aspect_ratio",
        "seed",
        "output_format",
        "mode",
        "image",
        "strength",
    }
)
OUTPUT_FORMATS = ("png", "jpeg")
MODES = ("text-to-image", "image-to-image")


class BedrockError(Exception):
    """An error answered in Bedrock's wire format: HTTP status, error type header, message."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


def validation(message: str) -> BedrockError:
    return BedrockError("ValidationException", 400, message)


def malformed(pointer: str, problem: str) -> BedrockError:
    # Bedrock's schema validator phrases body errors this way, naming the field by JSON pointer.
    return validation(
        f"Malformed input request: {pointer}: {problem}, please reformat your input and try again."
    )


# Prompt substrings that force one outcome, so tests and rehearsals need no luck:
# (error code, HTTP status, message), or None for "succeeds, but the image is filtered".
PROMPT_TRIGGERS: dict[str, tuple[str, int, str] | None] = {
    "[[throttle]]": ("ThrottlingException", 429, THROTTLED),
    "[[timeout]]": (
        "ModelTimeoutException",
        408,
        "Model has timed out in processing the request. Try your request again.",
    ),
    "[[unavailable]]": (
        "ServiceUnavailableException",
        503,
        "Bedrock is unable to process your request.",
    ),
    "[[denied]]": (
        "AccessDeniedException",
        403,
        "You don't have access to the model with the specified model ID.",
    ),
    "[[not-found]]": ("ResourceNotFoundException", 404, END_OF_LIFE),
    "[[internal]]": (
        "InternalServerException",
        500,
        "The system encountered an unexpected error during processing. Try your request again.",
    ),
    "[[model-error]]": (
        "ModelErrorException",
        424,
        "The model encountered an error while processing the request.",
    ),
    "[[filtered]]": None,
    "[[filtered-prompt]]": ("ValidationException", 400, AMAZON_PROMPT_BLOCKED),
}


@dataclass(frozen=True, slots=True)
class BedrockStats:
    invocations: int = 0
    images_returned: int = 0
    throttled: int = 0
    filtered: int = 0
    errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StabilityRequest:
    prompt: str
    negative_prompt: str | None
    aspect_ratio: str
    seed: int
    output_format: str


@dataclass(frozen=True, slots=True)
class AmazonRequest:
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    quality: str
    cfg_scale: float | None
    seed: int
    number_of_images: int

    @property
    def aspect_ratio(self) -> str:
        divisor = math.gcd(self.width, self.height)
        return f"{self.width // divisor}:{self.height // divisor}"


def render_size(aspect_ratio: str, short_side: int) -> tuple[int, int]:
    """Width and height for `aspect_ratio` ("W:H") with the short side fixed."""
    w, h = (int(part) for part in aspect_ratio.split(":"))
    long_side = max(8, round(short_side * max(w, h) / min(w, h) / 8) * 8)
    return (long_side, short_side) if w >= h else (short_side, long_side)


def _string_field(
    body: dict[str, Any], key: str, limit: int, *, required: bool, pointer: str = "#"
) -> str | None:
    if key not in body:
        if required:
            raise malformed(pointer, f"required key [{key}] not found")
        return None
    value = body[key]
    if not isinstance(value, str):
        raise malformed(f"{pointer}/{key}", f"expected type: String, found: {type(value).__name__}")
    if required and not value:
        raise malformed(f"{pointer}/{key}", "expected minLength: 1, actual: 0")
    if len(value) > limit:
        raise malformed(f"{pointer}/{key}", f"expected maxLength: {limit}, actual: {len(value)}")
    return value


def _enum_field(body: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or value not in allowed:
        raise malformed(f"#/{key}", f"{value} is not a valid enum value")
    return value


def _seed_field(body: dict[str, Any], spec: ModelSpec) -> int:
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise malformed("#/seed", f"expected type: Integer, found: {type(seed).__name__}")
    if seed < spec.limits.seed_min:
        raise malformed("#/seed", f"{seed} is not greater or equal to {spec.limits.seed_min}")
    if seed > spec.limits.seed_max:
        raise malformed("#/seed", f"{seed} is not less or equal to {spec.limits.seed_max}")
    return seed


def parse_stability(body: dict[str, Any], spec: ModelSpec) -> StabilityRequest:
    """Validate a Stability AI request body against the model's limits from the catalogue."""
    extraneous = sorted(set(body) - STABILITY_KEYS)
    if extraneous:
        raise malformed("#", f"extraneous key [{extraneous[0]}] is not permitted")
    prompt = _string_field(body, "prompt", spec.limits.prompt_max_chars, required=True)
    negative = _string_field(
        body, "negative_prompt", spec.limits.negative_prompt_max_chars, required=False
    )
    ratios = tuple(dict.fromkeys(size.aspect_ratio for size in spec.sizes))
    aspect_ratio = _enum_field(body, "aspect_ratio", ratios, "1:1")
    seed = _seed_field(body, spec)
    output_format = _enum_field(body, "output_format", OUTPUT_FORMATS, "png")
    if _enum_field(body, "mode", MODES, "text-to-image") != "text-to-image":
        raise validation(
            "The local Bedrock serves text-to-image only; image-to-image is not emulated."
        )
    if "image" in body or "strength" in body:
        raise malformed("#", "keys [image, strength] are only valid with mode image-to-image")
    assert prompt is not None  # required=True guarantees it; narrows the type
    return StabilityRequest(prompt, negative or None, aspect_ratio, seed, output_format)


def _object_field(body: dict[str, Any], key: str, allowed: frozenset[str]) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        found = "null" if value is None else type(value).__name__
        raise malformed(f"#/{key}", f"expected type: JSONObject, found: {found}")
    extraneous = sorted(set(value) - allowed)
    if extraneous:
        raise malformed(f"#/{key}", f"extraneous key [{extraneous[0]}] is not permitted")
    return value


def _int_in(
    body: dict[str, Any], pointer: str, key: str, *, low: int, high: int, default: int
) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise malformed(
            f"{pointer}/{key}", f"expected type: Integer, found: {type(value).__name__}"
        )
    if value < low:
        raise malformed(f"{pointer}/{key}", f"{value} is not greater or equal to {low}")
    if value > high:
        raise malformed(f"{pointer}/{key}", f"{value} is not less or equal to {high}")
    return value


def parse_amazon(body: dict[str, Any], spec: ModelSpec) -> AmazonRequest:
    """Validate an Amazon (Titan Image v2 / Nova Canvas) TEXT_IMAGE body against the catalogue."""
    extraneous = sorted(set(body) - AMAZON_KEYS)
    if extraneous:
        raise malformed("#", f"extraneous key [{extraneous[0]}] is not permitted")
    task = body.get("taskType")
    if task not in AMAZON_TASK_TYPES:
        if task is None:
            raise malformed("#", "required key [taskType] not found")
        raise validation(f"The local Bedrock emulates taskType TEXT_IMAGE only, not {task}.")
    params = _object_field(body, "textToImageParams", AMAZON_TEXT_KEYS)
    where = "#/textToImageParams"
    text = _string_field(params, "text", spec.limits.prompt_max_chars, required=True, pointer=where)
    negative = _string_field(
        params,
        "negativeText",
        spec.limits.negative_prompt_max_chars,
        required=False,
        pointer=where,
    )
    if negative is not None and not negative:
        raise malformed("#/textToImageParams/negativeText", "expected minLength: 1, actual: 0")
    config = (
        _object_field(body, "imageGenerationConfig", AMAZON_CONFIG_KEYS)
        if "imageGenerationConfig" in body
        else {}
    )
    pointer = "#/imageGenerationConfig"
    count = _int_in(
        config, pointer, "numberOfImages", low=1, high=spec.limits.images_per_request, default=1
    )
    width = _int_in(config, pointer, "width", low=1, high=1 << 16, default=1024)
    height = _int_in(config, pointer, "height", low=1, high=1 << 16, default=1024)
    if spec.size(width, height) is None:
        raise validation(
            f"The image size {width}x{height} is not supported by {spec.model_id}: "
            f"{spec.describe_sizes()}."
        )
    quality = config.get("quality", "standard")
    if quality not in spec.limits.qualities:
        raise malformed(f"{pointer}/quality", f"{quality} is not a valid enum value")
    cfg = config.get("cfgScale", spec.limits.guidance_default)
    if cfg is not None:
        if isinstance(cfg, bool) or not isinstance(cfg, int | float):
            raise malformed(
                f"{pointer}/cfgScale", f"expected type: Number, found: {type(cfg).__name__}"
            )
        low, high = spec.limits.guidance_min, spec.limits.guidance_max
        if (low is not None and cfg < low) or (high is not None and cfg > high):
            raise malformed(f"{pointer}/cfgScale", f"{cfg} is outside {low}..{high}")
    seed = _int_in(
        config, pointer, "seed", low=spec.limits.seed_min, high=spec.limits.seed_max, default=0
    )
    assert text is not None  # required=True guarantees it; narrows the type
    return AmazonRequest(
        text, negative, width, height, quality, None if cfg is None else float(cfg), seed, count
    )


def _to_format(png: bytes, output_format: str) -> bytes:
    if output_format == "png":
        return png
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class LocalBedrock:
    """The emulator: a threaded HTTP server in a background thread, bound to 127.0.0.1."""

    def __init__(
        self,
        renderer: Renderer,
        *,
        render_short_side: int = 64,
        render_steps: int = 1,
        render_guidance: float = 0.0,
        throttle_rate: float = 0.0,
        content_filter_rate: float = 0.0,
        fault_seed: int = 0,
        today: date | None = None,
    ) -> None:
        if render_short_side < 8 or render_short_side % 8:
            raise ValueError("render_short_side must be a positive multiple of 8")
        if not (0.0 <= throttle_rate <= 1.0 and 0.0 <= content_filter_rate <= 1.0):
            raise ValueError("throttle_rate and content_filter_rate must be within [0, 1]")
        self._renderer = renderer
        self.render_short_side = render_short_side
        self.render_steps = render_steps
        self.render_guidance = render_guidance
        self.throttle_rate = throttle_rate
        self.content_filter_rate = content_filter_rate
        # None means "the real date": retired catalogue models then answer as AWS does.
        self._today = today
        self._faults = random.Random(fault_seed)
        self._seeds = random.Random(fault_seed ^ 0x5EED)
        self._lock = threading.Lock()
        self._stats = BedrockStats()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._profiles: dict[str, str] = {}
        # model id -> (seconds denied, the clock, when its first call came or None)
        self._first_use: dict[str, tuple[float, Callable[[], float], float | None]] = {}
        self._families: dict[str, Callable[[ModelSpec, dict[str, Any]], dict[str, Any]]] = {
            "stability": self._invoke_stability,
            "amazon": self._invoke_amazon,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        if self._server is not None:
            return self.endpoint_url
        self._server = _Server(self)
        self._thread = serve_in_background(self._server, "local-bedrock")
        logger.info("local Bedrock Runtime listening on %s", self.endpoint_url)
        return self.endpoint_url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        stop_serving(server, thread)

    def __enter__(self) -> LocalBedrock:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalBedrock is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def stats(self) -> BedrockStats:
        with self._lock:
            return self._stats

    def _count(self, **deltas: int) -> None:
        with self._lock:
            current = self._stats.to_dict()
            for key, delta in deltas.items():
                current[key] += delta
            self._stats = BedrockStats(**current)

    def add_inference_profiles(self, profiles: dict[str, str]) -> None:
        """Application inference profiles by ARN -> the foundation model id each copies."""
        with self._lock:
            self._profiles.update(profiles)

    def deny_first_use(
        self, model_id: str, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """AccessDenied for `model_id` from its first call until `seconds` later."""
        with self._lock:
            self._first_use[model_id] = (seconds, clock, None)

    def _check_first_use(self, model_id: str) -> None:
        with self._lock:
            if model_id not in self._first_use:
                return
            seconds, clock, started = self._first_use[model_id]
            now = clock()
            if started is None:
                started = now
                self._first_use[model_id] = (seconds, clock, started)
        if now - started < seconds:
            raise BedrockError("AccessDeniedException", 403, FIRST_USE_DENIED)

    # -- InvokeModel ------------------------------------------------------------------------

    def invoke(self, model_id: str, raw_body: bytes) -> dict[str, Any]:
        """Answer one InvokeModel call; raises BedrockError for every non-200 outcome."""
        self._count(invocations=1)
        try:
            spec = self._resolve(model_id)
            self._check_first_use(spec.model_id)
            try:
                body = json.loads(raw_body or b"null")
            except (ValueError, UnicodeDecodeError) as exc:
                raise validation(
                    f"Malformed input request: {exc}, please reformat your input and try again."
                ) from exc
            if not isinstance(body, dict):
                raise malformed("#", f"expected type: JSONObject, found: {type(body).__name__}")
            family = self._families.get(spec.request_family)
            if family is None:
                raise validation(
                    f"The local Bedrock does not emulate the {spec.request_family} request family."
                )
            return family(spec, body)
        except BedrockError as error:
            if error.code == "ThrottlingException":
                self._count(throttled=1)
            else:
                self._count(errors=1)
            raise

    def _resolve(self, model_id: str) -> ModelSpec:
        if PROFILE_ARN.match(model_id):
            with self._lock:
                model_id = self._profiles.get(model_id, model_id)
        arn = MODEL_ARN.match(model_id)
        spec = load_catalogue().get(arn.group("id") if arn else model_id)
        if spec is None:
            raise validation(INVALID_MODEL)
        if spec.is_retired(self._today or date.today()):
            raise BedrockError("ResourceNotFoundException", 404, END_OF_LIFE)
        return spec

    def _fault(self, prompt: str) -> tuple[bool, bool]:
        """(throttle, filter) for this request: triggers first, then the seeded draws."""
        for trigger, error in PROMPT_TRIGGERS.items():
            if trigger in prompt:
                if error is None:
                    return False, True
                raise BedrockError(*error)
        with self._lock:
            # Both draws always happen so the sequence does not depend on earlier outcomes.
            throttle_draw, filter_draw = self._faults.random(), self._faults.random()
        return throttle_draw < self.throttle_rate, filter_draw < self.content_filter_rate

    def _render(
        self, request: StabilityRequest | AmazonRequest, seeds: list[int]
    ) -> list[RenderedImage]:
        """One image per seed, at the local scale of the request's aspect ratio."""
        width, height = render_size(request.aspect_ratio, self.render_short_side)
        return self._renderer.render(
            [
                RenderRequest(
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt,
                    width=width,
                    height=height,
                    seed=seed,
                    steps=self.render_steps,
                    guidance=self.render_guidance,
                )
                for seed in seeds
            ]
        )

    def _invoke_stability(self, spec: ModelSpec, body: dict[str, Any]) -> dict[str, Any]:
        request = parse_stability(body, spec)
        throttle, filtered = self._fault(request.prompt)
        if throttle:
            raise BedrockError("ThrottlingException", 429, THROTTLED)
        seed = request.seed
        if seed == 0:
            with self._lock:
                seed = self._seeds.randint(1, spec.limits.seed_max)
        if filtered:
            self._count(filtered=1)
            return {"seeds": [seed], "finish_reasons": [FILTER_REASON], "images": []}
        rendered = self._render(request, [seed])
        images = [
            base64.b64encode(_to_format(image.png, request.output_format)).decode("ascii")
            for image in rendered
        ]
        self._count(images_returned=len(images))
        return {"seeds": [seed], "finish_reasons": [None], "images": images}

    def _invoke_amazon(self, spec: ModelSpec, body: dict[str, Any]) -> dict[str, Any]:
        request = parse_amazon(body, spec)
        throttle, filtered = self._fault(request.prompt)
        if throttle:
            raise BedrockError("ThrottlingException", 429, THROTTLED)
        if filtered:
            self._count(filtered=1)
            return {"images": [], "error": AMAZON_OUTPUT_BLOCKED}
        # Amazon models take seed 0 as a seed, and n images count up from it.
        seeds = [request.seed + index for index in range(request.number_of_images)]
        images = [
            base64.b64encode(image.png).decode("ascii") for image in self._render(request, seeds)
        ]
        self._count(images_returned=len(images))
        return {"images": images, "error": None}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Bedrock takes many calls at once; socketserver's default backlog of 5 dropped
    # connections when a chunk opened 50 together.
    request_queue_size = 128

    def __init__(self, bedrock: LocalBedrock) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bedrock = bedrock


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive: botocore pools connections, and reconnecting per call costs more than
    # rendering a 64x64 image.
    protocol_version = "HTTP/1.1"
    server_version = "LocalBedrock/1.0"
    server: _Server

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = INVOKE_PATH.match(self.path.split("?", 1)[0])
        if match is None:
            self._error(BedrockError("UnknownOperationException", 404, f"No route: {self.path}"))
            return
        try:
            result = self.server.bedrock.invoke(unquote(match.group("model")), raw)
        except BedrockError as error:
            self._error(error)
        except Exception as exc:  # the emulator must answer; a dropped socket hangs the client
            logger.exception("local Bedrock failed on %s", self.path)
            self._error(BedrockError("InternalServerException", 500, str(exc)))
        else:
            self._send(200, json.dumps(result).encode("utf-8"))

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == STATS_PATH:
            self._send(200, json.dumps(self.server.bedrock.stats.to_dict()).encode("utf-8"))
        else:
            self._error(BedrockError("UnknownOperationException", 404, f"No route: {self.path}"))

    def _error(self, error: BedrockError) -> None:
        body = json.dumps({"message": error.message}).encode("utf-8")
        self._send(error.status, body, {"x-amzn-ErrorType": error.code + ERROR_NAMESPACE})

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


__all__ = [
    "PROMPT_TRIGGERS",
    "AmazonRequest",
    "BedrockError",
    "BedrockStats",
    "LocalBedrock",
    "StabilityRequest",
    "parse_amazon",
    "parse_stability",
    "render_size",
]
