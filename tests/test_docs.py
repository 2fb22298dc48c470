"""The user docs (README.md, CONTRIBUTING.md, docs/*.md) against the code they describe.

- every `vtfpar COMMAND` / `python -m vtfpar_jax COMMAND` they write names a command of
  `cli.COMMANDS`, and every `--flag` written after it on the same command line is in that
  command's help;
- every config field they override (`--config.FIELD=`, ablate's `--sweep`/`--set FIELD=`) is
  a field of the config file on that line (configs/mars.py where the line names none);
- none still writes the old `python -m vtfpar_jax.<module>` form;
- every relative link and image resolves to a file (and a heading, for `#anchor`s);
- no working notes or machine-local paths;
- the README stays short and has a contents list.

Help texts come in-process from `cli.main([command, '--help'])`, so no command runs.
"""

from __future__ import annotations

import contextlib
import functools
import io
import pathlib
import re

import pytest

from vtfpar_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")
# A command: `vtfpar NAME` (also .venv/bin/vtfpar NAME) or `python -m vtfpar_jax NAME`.
COMMAND = re.compile(r"(?:(?<![\w.-])python3? -m vtfpar_jax|(?<![\w.-])vtfpar)(?=\s)\s+"
                     r"([a-z][a-z0-9-]*)")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w.-]*")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
OLD_FORM = re.compile(r"python3? -m vtfpar_jax\.[\w.]+")
CONFIG_FILE = re.compile(r"--config[= ](configs/\w+\.py(?::[^\s'\"]*)?)")
PLACEHOLDERS = {"field", "FIELD"}   # usage lines: `--set field=value`
CONFIG_FIELD = re.compile(r"--config\.([\w.]+)|--(?:sweep|set)[= ]'?([\w.]+)=")

# Working notes and machine-local paths: anywhere in the text.
FORBIDDEN_ANYWHERE = ["/work/", "/tmp/", ".openpar/", "this project's 2-core",
                      "this 2-core machine", "this CPU machine", "no access to model downloads"]
# Working-note words: in prose only (code may name an onnxruntime `session`).
FORBIDDEN_PROSE = re.compile(r"\bsession\b|\blent\b|\bthe issue\b|\bissues? #?\d|"
                             r"\bmeasured here\b", re.I)


def code_texts(text: str) -> list[str]:
    """Fenced blocks and inline code spans, each as logical lines (continuations joined)."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    spans = [m.replace("\n", " ") for paragraph in re.split(r"\n\s*\n", prose)
             for m in INLINE.findall(paragraph)]
    lines = []
    for chunk in [*blocks, *spans]:
        lines += re.sub(r"\\\n\s*", " ", chunk).splitlines()
    return lines


def prose_of(text: str) -> str:
    return INLINE.sub("", FENCE.sub("", text))


def command_lines(path: pathlib.Path) -> list[tuple[str, list[str], str]]:
    """(command, flags written after it, the line) for each command written in `path`."""
    found = []
    for line in code_texts(path.read_text()):
        matches = list(COMMAND.finditer(line))
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            rest = line[m.end():end].split("&&")[0]
            flags = [f.rstrip(".") for f in FLAG.findall(rest)]
            found.append((m.group(1), flags, line.strip()))
    return found


@functools.cache
def help_text(name: str) -> str:
    """What `vtfpar NAME --help` prints (train: absl's --helpfull), without running it."""
    if name == "train":
        from absl import flags
        if "workdir" not in flags.FLAGS:   # train.main defines its absl flags once a process
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                with contextlib.suppress(SystemExit):
                    cli.main(["train", "--helpfull"])
        return "\n".join(f"--{n}" for n in flags.FLAGS)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        with pytest.raises(SystemExit):
            cli.main([name, "--help"])
    return out.getvalue()


def accepts(name: str, flag: str) -> bool:
    if flag in ("--help", "-h"):
        return True
    text = help_text(name).replace("--[no]", "--")
    if name == "train" and flag.startswith("--config."):   # a config field, not a flag
        flag = "--config"
    flag = flag.split("=")[0]
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_commands_and_flags_exist(path):
    wrong = []
    for name, flags, line in command_lines(path):
        if name not in cli.COMMANDS:
            wrong.append(f"no command {name!r}: {line}")
            continue
        wrong += [f"vtfpar {name} has no {flag}: {line}" for flag in flags
                  if not accepts(name, flag)]
    assert not wrong, f"{path.relative_to(ROOT)}:\n" + "\n".join(wrong)


@functools.cache
def fields_of(spec: str) -> frozenset[str]:
    from vtfpar_jax.training import config_file
    return frozenset(config_file.config_fields(config_file.load_config_file(str(ROOT / spec))))


def overridden_fields(path: pathlib.Path) -> list[tuple[str, str, str]]:
    """(config file, field, the line) for each config field a code line of `path` sets."""
    found = []
    for line in code_texts(path.read_text()):
        named = CONFIG_FILE.search(line)
        spec = named.group(1) if named else "configs/mars.py"
        if not (ROOT / spec.partition(":")[0]).is_file():
            continue   # a placeholder such as configs/X.py
        found += [(spec, a or b, line.strip()) for a, b in CONFIG_FIELD.findall(line)
                  if (a or b) not in PLACEHOLDERS]
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_config_fields_exist(path):
    wrong = [f"{spec} has no field {field!r}: {line}"
             for spec, field, line in overridden_fields(path) if field not in fields_of(spec)]
    assert not wrong, f"{path.relative_to(ROOT)}:\n" + "\n".join(wrong)


def test_the_docs_override_config_fields():
    """The extraction above finds the overrides (a broken regex would pass everything)."""
    fields = {field for path in DOCS for _, field, _ in overridden_fields(path)}
    assert {"data_dir", "backbone.path", "model.spatial_aggregation", "frozen_patterns"} <= fields


def test_the_docs_write_commands():
    """The extraction above finds the commands (a broken regex would pass everything)."""
    names = {name for path in DOCS for name, _, _ in command_lines(path)}
    assert {"train", "predict", "track", "export", "convert", "bench"} <= names


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_no_old_module_commands(path):
    old = sorted(set(m.group(0) for m in OLD_FORM.finditer(path.read_text())))
    assert not old, f"{path.relative_to(ROOT)}: old form {old}; write `vtfpar COMMAND`"


def anchors(path: pathlib.Path) -> set[str]:
    """GitHub's anchors of a Markdown file: its headings' slugs and explicit ids."""
    text = FENCE.sub("", path.read_text())
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
             for h in re.findall(r"^#+ (.+)$", text, re.M)}
    return slugs | set(re.findall(r'<a id="([^"]+)"', text))


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(path):
    missing = []
    for target in LINK.findall(FENCE.sub("", path.read_text())):
        if re.match(r"(https?|mailto):", target):
            continue
        file, _, anchor = target.partition("#")
        linked = path.parent / file if file else path
        if not linked.exists():
            missing.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)} links to missing files or anchors: {missing}"


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: p.name)
def test_no_working_notes(path):
    text = path.read_text()
    found = [phrase for phrase in FORBIDDEN_ANYWHERE if phrase in text]
    found += [m.group(0) for m in FORBIDDEN_PROSE.finditer(prose_of(text))]
    assert not found, f"{path.relative_to(ROOT)} holds working notes: {found}"


def test_readme_is_short_with_a_contents_list():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 260
    contents = re.search(r"^## Contents\n\n((?:- \[[^\]]+\]\(#[\w-]+\)\n)+)", text, re.M)
    assert contents, "README.md needs a '## Contents' list of section links"
    headings = {re.sub(r"[^\w -]", "", h).strip().lower().replace(" ", "-")
                for h in re.findall(r"^## (.+)$", text, re.M)}
    anchors = re.findall(r"\(#([\w-]+)\)", contents.group(1))
    assert set(anchors) <= headings, set(anchors) - headings
