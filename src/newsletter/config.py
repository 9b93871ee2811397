"""newsletter.yaml -> a frozen Config, every problem in the file reported together."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .css import font_stack_problem
from .errors import ConfigError, UsageError, where
from .recipients import is_plausible, normalize
from .yamlfile import YamlDoc, describe, load_yaml, unknown_key_message

CONFIG_NAME = "newsletter.yaml"
ENV_FILE_NAME = ".env"  # beside newsletter.yaml: the variables below, for whoever runs the commands there
HEX_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")

DEFAULT_COLORS: dict[str, str] = {
    "background": "#f4f1ec",  # around the email
    "content": "#ffffff",  # behind the text
    "text": "#2b2b2b",
    "heading": "#2b2b2b",
    "muted": "#5f5a55",  # footer small print
    "accent": "#6b3f7d",  # links and the button
    "button_text": "#ffffff",
    "cta_background": "#f3ecf6",
    "dark_background": "#121212",
    "dark_content": "#1e1e1e",
    "dark_text": "#ece8e3",
    "dark_muted": "#b8b2ab",
    "dark_accent": "#d9b8e6",
}
DEFAULT_FONTS: dict[str, str] = {
    "body": "Georgia, 'Times New Roman', Times, serif",
    "heading": "Georgia, 'Times New Roman', Times, serif",
}
TOP_KEYS = {
    "name", "language", "base_url", "sender", "reply_to", "postal_address", "workshops",
    "brand", "sendgrid", "footer_note", "archive_url", "check", "signup",
}
WORKSHOP_KEYS = {
    "title", "headline", "pitch", "register_url", "next", "date", "format", "price", "location", "button",
}
SENDGRID_KEYS = {
    "categories", "asm_group_id", "asm_groups_to_display", "batch_size", "concurrency", "timeout",
    "retries", "backoff", "click_tracking", "open_tracking", "unsubscribe_mailto", "sandbox",
}


@dataclass(frozen=True)
class SignupSettings:
    """`signup:` in newsletter.yaml: the sign-up page's promise and its abuse limits."""

    promise: str = ""  # one line under the form; default: "One letter a week from <name>..."
    per_address_per_day: int = 3  # confirmation emails to one address
    per_ip_per_hour: int = 20  # sign-ups from one (hashed) IP address


@dataclass(frozen=True)
class Mailbox:
    """A name and an email address."""

    email: str
    name: str = ""


@dataclass(frozen=True)
class Workshop:
    """A workshop an issue can promote in its call-to-action block."""

    id: str
    title: str
    headline: str
    pitch: str = ""
    register_url: str = ""
    next: str = ""
    date: str = ""
    format: str = ""
    price: str = ""
    location: str = ""
    button: str = "Reserve your place"


@dataclass(frozen=True)
class SendgridSettings:
    """How `send` talks to SendGrid; every field has a default."""

    categories: tuple[str, ...] = ("newsletter",)
    asm_group_id: int | None = None
    asm_groups_to_display: tuple[int, ...] = ()
    batch_size: int = 1000
    concurrency: int = 4
    timeout: float = 30.0
    retries: int = 5
    backoff: float = 0.5  # seconds before the first retry; doubles each time (with jitter)
    click_tracking: bool = False
    open_tracking: bool = False
    unsubscribe_mailto: str = ""
    sandbox: bool = False


@dataclass(frozen=True)
class Config:
    """The publication, as read from newsletter.yaml with defaults filled in."""

    root: Path
    name: str
    language: str
    base_url: str
    sender: Mailbox
    reply_to: str
    postal_address: str
    workshops: dict[str, Workshop]
    colors: dict[str, str]
    fonts: dict[str, str]
    sendgrid: SendgridSettings
    footer_note: str
    archive_url: str
    doc: YamlDoc = field(repr=False, compare=False)
    check_spam: bool = True  # `check: {spam: false}` turns SpamAssassin's score off (for `check` and `send`)
    signup: SignupSettings = field(default_factory=lambda: SignupSettings())

    @property
    def path(self) -> Path:
        """Where newsletter.yaml is."""
        return self.root / CONFIG_NAME

    def line(self, *keys: str) -> int | None:
        """The line in newsletter.yaml of a key path (for messages)."""
        return self.doc.line(*keys)


# -- environment variables: every name the tool reads, read in one place ----------------------------------
API_KEY_ENV = "SENDGRID_API_KEY"  # the key every SendGrid call uses
API_URL_ENV = "SENDGRID_API_URL"  # SendGrid's base URL (tests point it at a local fake)
SECRET_ENV = "NEWSLETTER_SECRET"  # signs unsubscribe and confirmation links
WEBHOOK_PUBLIC_KEY_ENV = "SENDGRID_WEBHOOK_PUBLIC_KEY"  # verifies SendGrid's signed Event Webhook
NAMESERVER_ENV = "NEWSLETTER_NAMESERVER"  # HOST:PORT of the DNS server `doctor` asks
ROOT_ENV = "NEWSLETTER_ROOT"  # the newsletter's folder, when --root is not given

_env_files_loaded: set[Path] = set()


def env_value(name: str) -> str:
    """The environment variable `name` as set (or loaded from .env), "" when it is not set."""
    return os.environ.get(name, "")


def env_set(name: str) -> bool:
    """Whether `name` holds something other than whitespace."""
    return bool(env_value(name).strip())


def env_file_path(root: Path) -> Path:
    """ROOT/.env: variables for the commands run in this newsletter (git-ignored)."""
    return root / ENV_FILE_NAME


def load_env_file(root: Path) -> bool:
    """Load ROOT/.env into the environment once per process, never overriding a variable already set (the
    shell or the service's environment wins). Whether a file was loaded."""
    path = env_file_path(root)
    if path in _env_files_loaded or not path.is_file():
        return False
    from dotenv import load_dotenv

    _env_files_loaded.add(path)
    try:
        return load_dotenv(path, override=False, interpolate=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {ENV_FILE_NAME}: {exc}", path=path,
                          hint="it holds lines such as NEWSLETTER_SECRET=..., in UTF-8") from None


def resolve_root(root: str | Path | None) -> Path:
    """--root, else NEWSLETTER_ROOT, else the nearest folder holding newsletter.yaml from the current directory
    upward (as git finds its repository). Raises UsageError (exit 2) when there is none: a command run in the
    wrong folder must not create a ledger there that no send will ever read. The folder's .env is loaded."""
    folder = _find_root(root)
    load_env_file(folder)
    return folder


def _find_root(root: str | Path | None) -> Path:
    given = root or env_value(ROOT_ENV)
    if given:
        folder = Path(given).expanduser().resolve()
        if not (folder / CONFIG_NAME).is_file():
            how = "--root" if root else ROOT_ENV
            raise UsageError(f"no {CONFIG_NAME} in {folder} (given by {how})",
                             hint="point it at your newsletter's folder, the one holding newsletter.yaml")
        return folder
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise UsageError(f"no {CONFIG_NAME} here or in any parent folder: run this in your newsletter's folder "
                     "or pass --root")


class _Problems:
    """Collects (line, message) pairs so every problem in a file is reported at once."""

    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.items: list[tuple[int | None, str]] = []

    def add(self, keys: tuple[str, ...], message: str) -> None:
        self.items.append((self.doc.line(*keys), message))

    def raise_if_any(self, error: type[ConfigError] = ConfigError) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            line, msg = self.items[0]
            raise error(msg, path=self.doc.path, line=line)
        text = "\n".join(f"{where(self.doc.path, line)}{msg}" for line, msg in self.items)
        raise error(f"{len(self.items)} problems:\n{text}")


def _text(p: _Problems, data: dict[str, Any], key: str, keys: tuple[str, ...], *, required: bool = False,
          default: str = "") -> str:
    value = data.get(key)
    if value is None:
        if required:
            p.add(keys[:-1] or keys, f"missing required key `{'.'.join(keys)}`")
        return default
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        p.add(keys, f"`{'.'.join(keys)}` must be text, not a {describe(value)}")
        return default
    return str(value).strip()


def _check_keys(p: _Problems, data: dict[str, Any], allowed: set[str], prefix: tuple[str, ...]) -> None:
    for key in data:
        if str(key) not in allowed:
            p.add((*prefix, str(key)), unknown_key_message(str(key), allowed))


def _mapping(p: _Problems, data: dict[str, Any], key: str, keys: tuple[str, ...]) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        p.add(keys, f"`{'.'.join(keys)}` must be a mapping of `key: value` lines, not a {describe(value)}")
        return {}
    return value


def _url(p: _Problems, value: str, keys: tuple[str, ...]) -> str:
    if value and not urlsplit(value).scheme.startswith("http"):
        p.add(keys, f"`{'.'.join(keys)}` must be a full URL starting with https://, got {value!r}")
    return value


def load_config(root: Path) -> Config:
    """Read and validate ROOT/newsletter.yaml; raises ConfigError listing every problem."""
    path = root / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(
            "no newsletter.yaml here", path=path,
            hint="run from the newsletter's folder, or pass --root DIR (or set NEWSLETTER_ROOT)",
        )
    doc = load_yaml(path, ConfigError)
    data = doc.data
    p = _Problems(doc)
    _check_keys(p, data, TOP_KEYS, ())

    name = _text(p, data, "name", ("name",), required=True)
    language = _text(p, data, "language", ("language",), default="en") or "en"
    if not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*", language) or language.lower() == "und":
        p.add(("language",), f"`language` must be a language tag such as `en` or `en-GB`, got {language!r}")
    base_url = _url(p, _text(p, data, "base_url", ("base_url",), required=True).rstrip("/"), ("base_url",))

    sender, reply_to = _load_sender(p, data, name)
    postal_address = _text(p, data, "postal_address", ("postal_address",), required=True)
    workshops = _load_workshops(p, data)
    colors, fonts = _load_brand(p, _mapping(p, data, "brand", ("brand",)))
    sendgrid = _load_sendgrid(p, _mapping(p, data, "sendgrid", ("sendgrid",)))
    footer_note = _text(p, data, "footer_note", ("footer_note",)) or (
        f"You are receiving this because you signed up for {name or 'this newsletter'}."
    )
    archive_url = _url(p, _text(p, data, "archive_url", ("archive_url",)).rstrip("/"), ("archive_url",))
    checks = _mapping(p, data, "check", ("check",))
    _check_keys(p, checks, {"spam"}, ("check",))
    check_spam = checks.get("spam", True)
    signup = _load_signup(p, _mapping(p, data, "signup", ("signup",)))
    if not isinstance(check_spam, bool):
        p.add(("check", "spam"), f"`check.spam` must be true or false, got {check_spam!r}")
    p.raise_if_any()
    return Config(
        root=root, name=name, language=language, base_url=base_url, sender=sender, reply_to=reply_to,
        postal_address=postal_address, workshops=workshops, colors=colors, fonts=fonts, sendgrid=sendgrid,
        footer_note=footer_note, archive_url=archive_url or f"{base_url}/archive", doc=doc,
        check_spam=check_spam is not False, signup=signup,
    )


def _load_signup(p: _Problems, raw: dict[str, Any]) -> SignupSettings:
    _check_keys(p, raw, {"promise", "per_address_per_day", "per_ip_per_hour"}, ("signup",))
    values: dict[str, Any] = {}
    for key in ("per_address_per_day", "per_ip_per_hour"):
        if key in raw:
            if isinstance(raw[key], int) and not isinstance(raw[key], bool) and 1 <= raw[key] <= 10000:
                values[key] = raw[key]
            else:
                p.add(("signup", key), f"`signup.{key}` must be a whole number from 1 to 10000, got {raw[key]!r}")
    promise = _text(p, raw, "promise", ("signup", "promise"))
    return SignupSettings(promise=promise, **values)


def _load_sender(p: _Problems, data: dict[str, Any], name: str) -> tuple[Mailbox, str]:
    """`sender` (`{name, email}` or just the address) and `reply_to` (default: the sender's address)."""
    sender = Mailbox(email="")
    raw_sender = data.get("sender")
    if raw_sender is None:
        p.add(("sender",), "missing required key `sender` (`{name: ..., email: ...}`)")
    elif isinstance(raw_sender, str):
        sender = Mailbox(email=raw_sender.strip(), name=name)
    elif isinstance(raw_sender, dict):
        _check_keys(p, raw_sender, {"name", "email"}, ("sender",))
        sender = Mailbox(
            email=_text(p, raw_sender, "email", ("sender", "email"), required=True),
            name=_text(p, raw_sender, "name", ("sender", "name"), default=name),
        )
    else:
        p.add(("sender",), f"`sender` must be `{{name: ..., email: ...}}`, not a {describe(raw_sender)}")
    if sender.email and not is_plausible(normalize(sender.email)):
        p.add(("sender", "email"), f"`sender.email` is not an email address: {sender.email!r}")
    reply_to = _text(p, data, "reply_to", ("reply_to",)) or sender.email
    if reply_to and not is_plausible(normalize(reply_to)):
        p.add(("reply_to",), f"`reply_to` is not an email address: {reply_to!r}")
    return sender, reply_to


def _load_workshops(p: _Problems, data: dict[str, Any]) -> dict[str, Workshop]:
    """`workshops`: id -> title, headline, pitch, register_url, next..."""
    workshops: dict[str, Workshop] = {}
    for wid, raw in _mapping(p, data, "workshops", ("workshops",)).items():
        wid = str(wid)
        keys = ("workshops", wid)
        if not isinstance(raw, dict):
            p.add(keys, f"workshop `{wid}` must be a mapping with at least `title`, not a {describe(raw)}")
            continue
        _check_keys(p, raw, WORKSHOP_KEYS, keys)
        fields = {k: _text(p, raw, k, (*keys, k)) for k in WORKSHOP_KEYS if k in raw}
        if not fields.get("title"):
            p.add(keys, f"workshop `{wid}` needs a `title`")
        _url(p, fields.get("register_url", ""), (*keys, "register_url"))
        workshops[wid] = Workshop(
            id=wid,
            title=fields.get("title", ""),
            headline=fields.get("headline") or fields.get("title", ""),
            **{k: v for k, v in fields.items() if k not in {"title", "headline"} and v},
        )
    for wid, w in workshops.items():
        if w.next and w.next not in workshops:
            p.add(("workshops", wid, "next"), unknown_workshop_message(w.next, workshops))
    return workshops


def _load_brand(p: _Problems, brand: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """`brand.colors` (hex, over the defaults) and `brand.fonts` (CSS font stacks)."""
    _check_keys(p, brand, {"colors", "fonts"}, ("brand",))
    colors = dict(DEFAULT_COLORS)
    for key, value in _mapping(p, brand, "colors", ("brand", "colors")).items():
        keys = ("brand", "colors", str(key))
        if key not in DEFAULT_COLORS:
            p.add(keys, unknown_key_message(str(key), DEFAULT_COLORS))
        elif not isinstance(value, str) or not HEX_COLOR.match(value):
            p.add(keys, f"colour `{key}` must be a hex colour such as \"#6b3f7d\" (quoted), got {value!r}")
        else:
            colors[str(key)] = value
    fonts = dict(DEFAULT_FONTS)
    for key, value in _mapping(p, brand, "fonts", ("brand", "fonts")).items():
        keys = ("brand", "fonts", str(key))
        if key not in DEFAULT_FONTS:
            p.add(keys, unknown_key_message(str(key), DEFAULT_FONTS))
        elif not isinstance(value, str) or not value.strip():
            p.add(keys, f"font `{key}` must be a CSS font stack such as \"Georgia, serif\", got {value!r}")
        elif problem := font_stack_problem(value):
            p.add(keys, f"font `{key}` is not a CSS font stack ({problem}): {value.strip()!r}; write family "
                  "names between commas, e.g. '\"Playfair Display\", Georgia, serif'")
        else:
            fonts[str(key)] = value.strip()
    return colors, fonts


def _load_sendgrid(p: _Problems, raw: dict[str, Any]) -> SendgridSettings:
    _check_keys(p, raw, SENDGRID_KEYS, ("sendgrid",))
    out: dict[str, Any] = {}

    def number(key: str, kind: type, low: float, high: float) -> None:
        if key not in raw:
            return
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            p.add(("sendgrid", key), f"`sendgrid.{key}` must be a number from {low:g} to {high:g}, got {value!r}")
        else:
            out[key] = kind(value)

    def flag(key: str) -> None:
        if key in raw:
            if not isinstance(raw[key], bool):
                p.add(("sendgrid", key), f"`sendgrid.{key}` must be true or false, got {raw[key]!r}")
            else:
                out[key] = raw[key]

    number("batch_size", int, 1, 1000)
    number("concurrency", int, 1, 16)
    number("timeout", float, 1, 300)
    number("retries", int, 0, 20)
    number("backoff", float, 0, 60)
    number("asm_group_id", int, 1, 2**31)
    for key in ("click_tracking", "open_tracking", "sandbox"):
        flag(key)
    if "categories" in raw:
        cats = raw["categories"]
        if isinstance(cats, str):
            cats = [cats]
        if (not isinstance(cats, list) or len(cats) > 10
                or not all(isinstance(c, str) and c.isascii() and 0 < len(c) <= 255 for c in cats)):
            p.add(("sendgrid", "categories"), "`sendgrid.categories` must be a list of at most 10 ASCII names")
        else:
            out["categories"] = tuple(dict.fromkeys(cats))
    if "asm_groups_to_display" in raw:
        groups = raw["asm_groups_to_display"]
        if not isinstance(groups, list) or len(groups) > 25 or not all(
            isinstance(g, int) and not isinstance(g, bool) for g in groups
        ):
            p.add(("sendgrid", "asm_groups_to_display"), "`sendgrid.asm_groups_to_display` must be up to 25 group ids")
        else:
            out["asm_groups_to_display"] = tuple(groups)
    if raw.get("unsubscribe_mailto"):
        mailto = str(raw["unsubscribe_mailto"]).strip()
        if not is_plausible(normalize(mailto)):
            p.add(("sendgrid", "unsubscribe_mailto"),
                  f"`sendgrid.unsubscribe_mailto` is not an email address: {mailto!r}")
        out["unsubscribe_mailto"] = mailto
    return SendgridSettings(**out)


def unknown_workshop_message(wid: str, workshops: dict[str, Workshop]) -> str:
    """'unknown workshop `x`' with the ids that exist."""
    import difflib

    close = difflib.get_close_matches(wid, list(workshops), n=1)
    msg = f"unknown workshop `{wid}`"
    if close:
        return msg + f" (did you mean `{close[0]}`?)"
    return msg + (f"; workshops in newsletter.yaml: {', '.join(workshops)}" if workshops else
                  "; newsletter.yaml defines no workshops")
