"""The docs say what the code does: their examples are run, their links resolve.

docs/flows.md marks its examples by the fence's info string (renderers read only the
first word):

- ```` ```yaml ````: a whole file that lints clean, or a part of ``flows.yaml`` whose
  first line says ``# from flows.yaml, FLOW`` (``, abridged``: some keys left out);
- ```` ```yaml broken ````: lints with exactly the problems of the ```` ```text ```` after it;
- ```` ```yaml docs/PATH ````: that file as it is; a first line ``# docs/PATH``: that file
  without its comment lines;
- ```` ```console ```` starting ``$ flowctl ...``, and a ```` ```mermaid ```` after a line
  ``\\`flowctl graph ...\\`:``: the command's output, byte for byte.
"""

from __future__ import annotations

import json
import re
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from engine import Instance, Registry, Runtime, SystemClock, check_text, load_file
from engine import loader as engine_loader
from engine.model import FIELD_TYPES
from engine.reference import entries, summary, to_markdown
from web.cli import main as flowctl

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "flows.md"
REGISTRY = Registry().load_modules(["flows"])


@attrs.frozen
class Fence:
    info: str
    text: str
    line: int  # 1-based line of the opening fence
    before: str  # the last non-empty line before it

    @property
    def first(self) -> str:
        return self.text.split("\n", 1)[0]


def fences(path: Path) -> list[Fence]:
    """Every fenced code block of a Markdown file, in order."""
    out: list[Fence] = []
    lines = path.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            info = lines[i][3:].strip()
            end = lines.index("```", i + 1)
            before = next((x for x in reversed(lines[:i]) if x.strip()), "")
            out.append(Fence(info, "\n".join(lines[i + 1:end]) + "\n", i + 1, before))
            i = end + 1
        else:
            i += 1
    return out


def lint_output(text: str) -> str:
    """What `flowctl lint` prints for a file named flows.yaml, both streams together."""
    _, diags = check_text(text, "flows.yaml", REGISTRY)
    return "".join(f"{d}\n" for d in diags) + f"{len(diags)} problem(s)\n"


def run_flowctl(command: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = shlex.split(command)
    assert args[0] in ("flowctl", ".venv/bin/flowctl"), command
    capsys.readouterr()
    code = flowctl(args[1:])
    return code, capsys.readouterr().out


# -- flows.yaml excerpts -------------------------------------------------------------

_EXCERPT = re.compile(r"#\s*from flows\.yaml, (?P<flow>[a-z_]+)(?P<abridged>, abridged)?")


def _covers(shown: Any, real: Any) -> bool:
    """``shown`` is ``real`` with some mapping keys or list items left out."""
    if isinstance(shown, dict) and isinstance(real, dict):
        return all(k in real and _covers(v, real[k]) for k, v in shown.items())
    if isinstance(shown, list) and isinstance(real, list):
        return all(any(_covers(s, r) for r in real) for s in shown)
    return bool(shown == real)


def check_excerpt(fence: Fence, real_file: dict[str, Any]) -> None:
    found = _EXCERPT.search(fence.first)
    assert found, f"docs/flows.md:{fence.line}: an excerpt names its flow"
    flow = real_file["flows"][found["flow"]]
    shown = yaml.safe_load(fence.text)
    if isinstance(shown, list):  # transitions
        candidates = flow["transitions"]
        items = shown
    else:  # a state, by name
        candidates = [flow["states"]]
        items = [shown]
    for item in items:
        if found["abridged"]:
            ok = any(_covers(item, c) for c in candidates)
        elif isinstance(shown, list):
            ok = item in candidates
        else:
            ok = all(flow["states"].get(k) == v for k, v in item.items())
        assert ok, f"docs/flows.md:{fence.line}: not what flows.yaml has for {found['flow']}"


def test_every_yaml_example_in_the_guide_lints_or_fails_as_the_text_says() -> None:
    real_file = yaml.safe_load((ROOT / "flows.yaml").read_text(encoding="utf-8"))
    blocks = fences(GUIDE)
    checked = 0
    for k, fence in enumerate(blocks):
        if not fence.info.startswith("yaml"):
            continue
        where = f"docs/flows.md:{fence.line}"
        words = fence.info.split()
        if words[1:] == ["broken"]:
            shown = blocks[k + 1]
            assert shown.info == "text", f"{where}: a broken example is followed by its output"
            assert lint_output(fence.text) == shown.text, where
        elif len(words) == 2 and words[1].startswith("docs/"):
            assert fence.text == (ROOT / words[1]).read_text(encoding="utf-8"), where
            assert check_text(fence.text, words[1], REGISTRY)[1] == [], where
        elif fence.first.startswith("# docs/"):
            path = ROOT / fence.first[2:].strip()
            kept = "".join(line for line in path.read_text(encoding="utf-8").splitlines(True)
                           if not line.startswith("#"))
            assert fence.text.split("\n", 1)[1] == kept, where
        elif _EXCERPT.search(fence.first):
            check_excerpt(fence, real_file)
        else:
            assert words == ["yaml"], f"{where}: unknown example kind {fence.info!r}"
            assert lint_output(fence.text) == "0 problem(s)\n", where
        checked += 1
    assert checked >= 7


@pytest.mark.usefixtures("keep_logging")
def test_commands_shown_with_their_output_print_that_output(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("FLOWS_FILE", raising=False)
    ran = 0
    for fence in fences(GUIDE):
        command = None
        expected = fence.text
        if fence.first.startswith("$ flowctl "):
            command = fence.first[2:]
            expected = fence.text.split("\n", 1)[1]
        elif fence.info == "mermaid":
            found = re.fullmatch(r"`(flowctl graph [^`]+)`:", fence.before.strip())
            assert found, f"docs/flows.md:{fence.line}: a diagram says which command drew it"
            command = found[1]
        if command is None:
            continue
        code, out = run_flowctl(command, capsys)
        assert code == 0, command
        assert out == expected, f"docs/flows.md:{fence.line}: {command}"
        ran += 1
    assert ran >= 2


@pytest.mark.usefixtures("keep_logging")
def test_the_guides_shell_examples_run(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("FLOWS_FILE", raising=False)
    commands = [line.split("#", 1)[0].strip() for fence in fences(GUIDE)
                if fence.info == "sh" for line in fence.text.splitlines() if line.strip()]
    assert commands
    for command in commands:
        assert run_flowctl(command, capsys)[0] == 0, command


def test_the_python_example_compiles() -> None:
    for fence in fences(GUIDE):
        if fence.info == "python":
            compile(fence.text, f"docs/flows.md:{fence.line}", "exec")


def test_the_restart_example_is_what_an_expired_instance_answers() -> None:
    shown = next(f for f in fences(GUIDE) if f.info == "json" and '"restart"' in f.first)
    restart = json.loads("{" + shown.text + "}")["restart"]
    flows = load_file(str(ROOT / "docs" / "example-flows.yaml"), REGISTRY)
    runtime = Runtime(store=None, clock=SystemClock(), registry=REGISTRY,  # type: ignore[arg-type]
                      flows=flows)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    # What the example's user entered; the sealed number is not carried over.
    sealed = {"kind": "mobile", "sealed": "…", "masked": "138****8000"}
    values = {**restart["body"]["prefill"], "mobile": sealed}
    instance = Instance(id="i", flow=restart["flow"], definition_hash="v", state="confirm",
                        context={"values": values}, version=3, status="active",
                        created_at=now, updated_at=now, expires_at=now, last_hash="h")
    assert runtime.restart_hint(instance) == restart


# -- the table of registered names ---------------------------------------------------

def test_the_names_table_lists_what_the_flows_package_registers() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    table = guide.split("<!-- names-table:start -->\n", 1)[1].split("<!-- names-table:end -->")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")][2:]
    shown = {}
    for row in rows:
        kind, name, module, what = (c.strip() for c in row.strip("|").split(" | "))
        shown[(kind, name.strip("`"))] = (module.strip("`"), what)
    expected = {}
    for kind, names in (("validator", REGISTRY.validators), ("guard", REGISTRY.guards),
                        ("action", REGISTRY.actions), ("policy", REGISTRY.policies),
                        ("sender", REGISTRY.senders)):
        for name, fn in names.items():
            expected[(kind, name)] = (fn.__module__, summary(fn))
    lines = [f"| {k} | `{n}` | `{m}` | {w or '*(no docstring)*'} |"
             for (k, n), (m, w) in expected.items()]
    assert shown.keys() == expected.keys(), "the table should be:\n" + "\n".join(lines)
    for key, (module, what) in expected.items():
        assert shown[key][0] == module, key
        if what is None:
            # No docstring: the guide says so, and may say in its own words what it does.
            assert shown[key][1].startswith("*(no docstring)*"), key
        else:
            assert shown[key][1] == what, key


def test_the_parameters_table_lists_every_declared_parameter() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    table = guide.split("<!-- params-table:start -->\n", 1)[1].split(
        "<!-- params-table:end -->")[0]
    shown = [line for line in table.splitlines() if line.startswith("| ")][2:]
    expected = []
    for kind, specs in (("action", REGISTRY.action_specs), ("guard", REGISTRY.guard_specs)):
        for name, spec in specs.items():
            for p in spec.params:
                default = "*(required)*" if p.required else "*(not given)*" \
                    if p.default is None else f"`{p.default}`"
                expected.append(f"| {kind} | `{name}` | `{p.name}` | {p.kind} | {default} | "
                                f"{p.description} |")
    assert shown == expected, "the table should be:\n" + "\n".join(expected)


# -- the lint table ------------------------------------------------------------------

def _template(node: Any) -> str | None:
    """A message in the loader's source as a regular expression: values become ``.+``."""
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.escape(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(re.escape(v.value) if isinstance(v, ast.Constant) else ".+"
                       for v in node.values)
    return None


def lint_messages() -> list[str]:
    """Every message the loader and the duration parser write, as regular expressions."""
    import ast

    found = []
    for module, arg in (("engine/loader.py", {"err": 1, "Diagnostic": 3}),
                        ("engine/durations.py", {"ValueError": 0})):
        tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in arg and len(node.args) > arg[name]:
                pattern = _template(node.args[arg[name]])
                if pattern is not None:
                    found.append(pattern)
    return found


def table_messages() -> list[str]:
    guide = GUIDE.read_text(encoding="utf-8")
    table = guide.split("## Lint: every check", 1)[1].split("\nLint does **not** check", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    out = []
    for row in rows:
        message_cell = row.rstrip("|").rsplit(" | ", 1)[1]
        out.extend(re.findall(r"`([^`]+)`", message_cell))
    return out


def test_every_lint_message_is_in_the_guides_table_as_the_loader_writes_it() -> None:
    templates = lint_messages()
    shown = table_messages()
    # A message in the table is one the loader writes (known names cut to '…' excepted).
    for message in shown:
        if message.startswith("policy '"):
            continue  # the policies' own parsers word these: see the next test
        assert any(re.fullmatch(t, message) for t in templates), message
    # Every message the loader can write has an example in the table.
    missing = [t for t in templates if not any(re.fullmatch(t, m) for m in shown)]
    assert missing == [], f"add these checks to the table in docs/flows.md: {missing}"


def test_the_known_names_the_lint_table_lists_are_the_current_ones() -> None:
    keys = {"the file": engine_loader._TOP_KEYS, "flow": engine_loader._FLOW_KEYS,
            "state": engine_loader._STATE_KEYS, "field": engine_loader._FIELD_KEYS,
            "transition": engine_loader._TRANSITION_KEYS, "timeout": engine_loader._TIMEOUT_KEYS,
            "limit": engine_loader._LIMIT_KEYS, "error": engine_loader._ERROR_KEYS,
            "shared": engine_loader._SHARED_ERROR_KEYS, "next": engine_loader._NEXT_KEYS}
    names = {"validator": REGISTRY.validators, "policy": REGISTRY.policies}
    checked = 0
    for message in table_messages():
        if "…" in message:
            continue
        found = re.fullmatch(r"unknown key '.+' in (the file|\w+).*\(known: (.+)\)", message)
        if found:
            assert found[2].split(", ") == sorted(keys[found[1]]), message
            checked += 1
        found = re.fullmatch(r"unknown (validator|policy) '.+' \(known: (.+)\)", message)
        if found:
            assert found[2].split(", ") == sorted(names[found[1]]), message
            checked += 1
        found = re.fullmatch(r"unknown field type '.+' \(known: (.+)\)", message)
        if found:
            assert tuple(found[1].split(", ")) == FIELD_TYPES, message
            checked += 1
    assert checked >= 10


# -- links ---------------------------------------------------------------------------

def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


DOCUMENTS = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_link_in_the_docs_leads_somewhere_in_the_repository(document: Path) -> None:
    text = re.sub(r"^```.*?^```", "", document.read_text(encoding="utf-8"),
                  flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        file_part, _, anchor = target.partition("#")
        path = (document.parent / file_part).resolve() if file_part else document
        assert path.is_relative_to(ROOT), f"{document.name}: {target} is outside the project"
        assert path.exists(), f"{document.name}: {target} does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{document.name}: no heading for {target}"


def test_no_text_names_a_markdown_file_the_repository_does_not_have() -> None:
    present = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    texts = [p for pattern in ("*.py", "*.md", "*.yaml", "*.toml", "Makefile")
             for p in ROOT.rglob(pattern)
             if not {".venv", ".git", ".data", "node_modules"} & set(p.parts)]
    for path in texts:
        for name in re.findall(r"\b([A-Za-z][\w-]*\.md)\b", path.read_text(encoding="utf-8")):
            assert name in present, f"{path.relative_to(ROOT)} names {name}"


# -- the README's tables -------------------------------------------------------------

README = ROOT / "README.md"


def readme_section(title: str) -> str:
    return README.read_text(encoding="utf-8").split(f"\n## {title}\n", 1)[1].split("\n## ")[0]


def test_the_readme_starts_with_the_two_commands() -> None:
    first = fences(README)[0]
    assert [line.split("#")[0].strip() for line in first.text.splitlines()] == [
        "make run", "make test"]
    assert README.read_text(encoding="utf-8").index("```") < 200


def test_the_readme_names_every_setting_the_code_reads_and_no_other() -> None:
    settings = (ROOT / "web" / "settings.py").read_text(encoding="utf-8")
    providers = (ROOT / "flows" / "providers" / "__init__.py").read_text(encoding="utf-8")
    read = set(re.findall(r'\br\.\w+\(\s*"([A-Z0-9_]+)"', settings))
    read |= set(re.findall(r'(?:config\.get|_seconds)\((?:config, )?"([A-Z0-9_]+)"',
                           providers))
    prefixes = set(re.findall(r'"([A-Z]+)"', settings.split("_PROVIDER_PREFIXES = ", 1)[1]
                              .split("\n", 1)[0]))
    table = readme_section("Configuration")
    shown = set(re.findall(r"`([A-Z][A-Z0-9_]+|<P>_[A-Z_]+)`", table))
    assert read - shown == set(), "settings missing from the README's Configuration table"
    for name in shown - read:
        # <P>_URL and the like: one of the provider prefixes' variables.
        assert name.startswith("<P>_") or name.split("_", 1)[0] in prefixes, name


def _route_spellings(cell: str) -> set[tuple[str, str]]:
    """`GET /a`, `/b`, `POST /c/{x,y}` -> (method, path) pairs, parameters as {}."""
    out = set()
    method = ""
    for code in re.findall(r"`([^`]+)`", cell):
        parts = code.split()
        if len(parts) == 2:
            method, path = parts
        else:
            path = parts[0]
        out.add((method, re.sub(r"\{[^}]*\}", "{}", path.split("?")[0])))
    return out


def test_the_readmes_api_table_lists_every_route() -> None:
    from web.app import create_app
    from web.settings import Settings

    app = create_app(Settings(database_url="postgresql://unused", redis_url="redis://unused",
                              flows_file=str(ROOT / "flows.yaml")))
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method in ("HEAD", "*") or path.startswith(("/sandbox", "/api/docs/")):
            continue
        routes.add((route.method, re.sub(r"\{[^}]*\}", "{}", path)))
    rows = [line for line in readme_section("The HTTP API").splitlines()
            if line.startswith("| `")]
    shown = set().union(*(_route_spellings(row.split(" | ")[0]) for row in rows))
    assert routes == shown


def test_the_readme_shows_every_flowctl_command() -> None:
    cli = (ROOT / "web" / "cli.py").read_text(encoding="utf-8")
    commands = set(re.findall(r'sub\.add_parser\("([a-z-]+)"', cli)) - {"admin"}
    commands |= {f"admin {c}" for c in re.findall(r'admin\.add_parser\("([a-z-]+)"', cli)}
    block = next(f for f in fences(README) if "flowctl lint" in f.text).text
    shown = set()
    for line in block.splitlines():
        words = line.split("#")[0].split()
        if words and words[0].endswith("flowctl"):
            shown.add(" ".join(words[1:3]) if words[1] == "admin" else words[1])
    assert commands == shown


def test_the_reference_is_what_the_registry_declares() -> None:
    """docs/reference.md is `flowctl actions --markdown`: a new or changed name, parameter,
    result or refusal that is not in it fails here (regenerate it with that command)."""
    committed = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert committed == to_markdown(entries(REGISTRY)), \
        "docs/reference.md is stale: flowctl actions --markdown > docs/reference.md"
