"""The documentation stays true: every command in a fenced shell block of README.md and docs/*.md runs a module or
script that exists, passes only options that exist (recipe keys, or options the command defines), and names only
repository files that exist. Nothing is run and MindSpore is not imported: modules are found as files and their
options read from their source."""
import glob
import os
import re
import shlex

import pytest

from src.recipe_keys import RULES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
SHELL_FENCES = ("bash", "sh", "shell")
# Paths a command may name that are inputs or outputs of the user, not files of the repository, need no check; a
# path is checked when its first component is one of these folders of the repository (or a top-level .py file).
REPO_FOLDERS = ("configs", "src", "scripts", "benchmarks", "tests", "ascend310_infer", "docs")
PLACEHOLDER = re.compile(r"[$<>*{}]")
OPTION_LITERAL = re.compile(r"""["'](--[A-Za-z][A-Za-z0-9_-]*)["']""")
SHELL_OPTION = re.compile(r"(?<![\w-])(--[A-Za-z][A-Za-z0-9_-]*)")
PROJECT_IMPORT = re.compile(r"^\s*(?:from|import)\s+((?:src|benchmarks)(?:\.\w+)*)", re.M)
RECIPE_READERS = ("recipe_parser(", "load_config(", "parse_recipe_args(")
PYTHONS = ("python", "python3")


def shell_blocks(path):
    """The fenced shell blocks of a markdown file -> [(line number of the first command line, text)]."""
    blocks, inside, lines, start = [], None, [], 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fence = line.strip().startswith("```")
            if inside is None and fence:
                inside, lines, start = line.strip()[3:].strip().lower() in SHELL_FENCES, [], number + 1
            elif inside is not None and fence:
                if inside:
                    blocks.append((start, "".join(lines)))
                inside = None
            elif inside:
                lines.append(line)
    return blocks


def simple_commands(text):
    """A shell block -> lists of words, one list per simple command (continuation lines joined, comments dropped,
    split at ; && || | and shell keywords)."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words = []
        for word in lexer:
            if word in (";", "&&", "||", "|", "&"):
                commands.append(words)
                words = []
            else:
                words.append(word)
        commands.append(words)
    result = []
    for words in commands:
        while words and (re.match(r"^[A-Za-z_]\w*=", words[0]) or words[0] in ("do", "then", "else", "exec")):
            words = words[1:]
        if words and words[0] not in ("for", "done", "fi", "if"):
            result.append(words)
    return result


def module_file(module):
    """``src.a.b`` -> the file ``python -m src.a.b`` runs, or None."""
    base = os.path.join(ROOT, *module.split("."))
    for candidate in (base + ".py", os.path.join(base, "__main__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def python_options(path):
    """Options a python command accepts: the option strings of its file and of the project modules it imports,
    plus every recipe key when one of them reads the recipe."""
    sources = [read(path)]
    for module in PROJECT_IMPORT.findall(sources[0]):
        imported = module_file(module) or os.path.join(ROOT, *module.split("."), "__init__.py")
        if os.path.isfile(imported) and module != "src.config":     # src.config defines the readers
            sources.append(read(imported))
    options = {"--help"}
    for source in sources:
        options.update(OPTION_LITERAL.findall(source))
    if any(reader in source for source in sources for reader in RECIPE_READERS):
        options.update(f"--{key}" for key in RULES)
        options.add("--config")
    return options


def script_options(path, seen=()):
    """Options a shell wrapper accepts: those it names itself and those of the python files, modules and scripts
    it runs (``$ROOT/eval.py``, ``-m src.x``, ``.../msrun_train.sh``)."""
    text = read(path)
    options = set(SHELL_OPTION.findall(text))
    for name in set(re.findall(r"([\w/.$\"{}]*?)(\w+\.py)\b", text)):
        for candidate in glob.glob(os.path.join(ROOT, "**", name[1]), recursive=True):
            if ".venv" not in candidate:
                options |= python_options(candidate)
    for module in set(re.findall(r"-m\s+(src(?:\.\w+)+)", text)):
        if module_file(module):
            options |= python_options(module_file(module))
    for name in set(re.findall(r"(\w+\.sh)\b", text)):
        other = os.path.join(ROOT, "scripts", name)
        if os.path.isfile(other) and other != path and other not in seen:
            options |= script_options(other, seen + (path,))
    return options


def repository_paths(words):
    """The words (and the parts of --key=value and "[a, b]" values) that name files of the repository."""
    for word in words:
        value = word.split("=", 1)[1] if word.startswith("--") and "=" in word else word
        for part in re.split(r"[\[\],\s]+", value):
            if not part or PLACEHOLDER.search(part) or part.startswith(("-", "/")):
                continue
            first = part.split("/")[0]
            if first in REPO_FOLDERS and "/" in part or ("/" not in part and re.fullmatch(r"\w+\.py", part)
                                                           and os.path.isfile(os.path.join(ROOT, part))):
                yield part


def check_command(words):
    """Problems with one command (list of words) -> list of strings; [] when it is right."""
    problems, runner, options = [], None, None
    program = os.path.basename(words[0])
    if program in PYTHONS and len(words) > 2 and words[1] == "-m":
        module, args = words[2], words[3:]
        if module.split(".")[0] in ("src", "benchmarks", "tests"):
            runner = module_file(module)
            if runner is None:
                problems.append(f"python -m {module}: no such module")
    elif program in PYTHONS and len(words) > 1 and words[1].endswith(".py"):
        runner, args = os.path.join(ROOT, words[1]), words[2:]
        if not os.path.isfile(runner):
            problems.append(f"python {words[1]}: no such file")
            runner = None
    elif program in ("bash", "sh") and len(words) > 1 and words[1].endswith(".sh"):
        runner, args = os.path.join(ROOT, words[1]), words[2:]
        if not os.path.isfile(runner):
            problems.append(f"bash {words[1]}: no such file")
            runner = None
    else:
        args = words[1:]
    if runner is not None:
        options = script_options(runner) if runner.endswith(".sh") else python_options(runner)
        for word in args:
            option = word.strip("[]").split("=", 1)[0]
            if option.startswith("--") and option not in options:
                problems.append(f"{' '.join(words[:3])}: {option} is neither a recipe key nor an option of the command")
    for part in repository_paths(words):
        if not os.path.exists(os.path.join(ROOT, part)):
            problems.append(f"{part}: no such file or folder in the repository")
    return problems


def documented_commands():
    """Every command of every shell block -> [(file:line, words)]."""
    found = []
    for path in DOCS:
        for line, text in shell_blocks(path):
            for words in simple_commands(text):
                found.append((f"{os.path.relpath(path, ROOT)}:{line}", words))
    return found


def test_readme_is_a_short_manual_with_the_set_up_commands():
    text = read(os.path.join(ROOT, "README.md"))
    assert len(text.splitlines()) <= 300
    assert "bash scripts/run_demo.sh" in text and "bash scripts/run_tests.sh" in text


def test_the_docs_hold_commands_of_every_kind():
    """The check below cannot pass by finding nothing: the docs run entry points, modules, wrappers and
    benchmarks."""
    commands = documented_commands()
    firsts = {" ".join(words[:2]) for _, words in commands}
    assert len(commands) > 50
    for expected in ("python train.py", "python eval.py", "python export.py", "python -m",
                     "bash scripts/run_demo.sh", "python benchmarks/bench_model.py"):
        assert any(first.startswith(expected) for first in firsts), expected


@pytest.mark.parametrize("path", DOCS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_documented_command_exists_with_its_options_and_files(path):
    problems = []
    for line, text in shell_blocks(path):
        for words in simple_commands(text):
            problems += [f"{os.path.relpath(path, ROOT)}:{line}: {p}" for p in check_command(words)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command, problem", [
    ("python -m src.no_such_module --channels 4", "no such module"),
    ("python eval.py --no_such_key 1", "--no_such_key is neither"),
    ("python train.py --config configs/no_such_recipe.yaml", "configs/no_such_recipe.yaml: no such file"),
    ("bash scripts/run_eval_cpu.sh C --export_formatt ONNX", "--export_formatt is neither"),
    ("python benchmarks/bench_model.py --channels 512 --trials x", "--trials is neither"),
    ("python -m src.data.synthetic --out x --no_augment_folderz", "--no_augment_folderz is neither"),
    ("bash scripts/no_such_wrapper.sh 0", "no such file"),
    ("python -m src.data.convert --src a --dst b --channels 4", "--channels is neither"),
])
def test_the_check_finds_wrong_commands(command, problem):
    found = check_command(simple_commands(command)[0])
    assert any(problem in p for p in found), found


@pytest.mark.parametrize("command", [
    "python -m src.data.synthetic --out /tmp/x --no_augment_folders --train_speakers 0",
    "bash scripts/run_eval_cpu.sh C --config configs/demo_config.yaml --score_norm asnorm",
    "python benchmarks/bench_model.py --channels 512 --json runs/benchmarks/x.json",
    "bash scripts/run_infer_cpu.sh M /data/x 0 --trials /data/t.txt --infer_max_windows 1",
    "python -m pytest -s tests/test_export.py",
])
def test_the_check_accepts_right_commands(command):
    assert check_command(simple_commands(command)[0]) == []


LINK = re.compile(r"\]\(([^)\s]+)\)")
def anchors(path):
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces -> '-'."""
    found = set()
    for line in read(path).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_reach_a_file_and_heading(path):
    problems = []
    for target in LINK.findall(read(path)):
        if re.match(r"^[a-z]+:", target):
            continue                                    # https:, mailto:
        name, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(path), name)) if name else path
        if not os.path.exists(linked):
            problems.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(linked):
            problems.append(f"{target}: no heading #{anchor} in {os.path.relpath(linked, ROOT)}")
    assert not problems, f"{os.path.relpath(path, ROOT)}: " + "; ".join(problems)
