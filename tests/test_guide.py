"""GUIDE.md stays true to the code: every script, flag and file it names exists, every image and
link it points to is there, and every block of Python it quotes still appears, word for word, in
the script it names. The checks are plain functions, and the last tests feed them a guide with
one mistake each, to show that they find it."""

import re
import textwrap

import pytest

from conftest import REPO_DIR

GUIDE = REPO_DIR / "GUIDE.md"
README = REPO_DIR / "README.md"
# Folders that the scripts create when they run: a path in them need not exist in the repository.
MADE_BY_RUNS = ("outputs/", "checkpoints/", "data/")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(text, language):
    """The contents of the fenced blocks of one language, in order."""
    return [body for lang, body in FENCE.findall(text) if lang == language]


def prose(text):
    """The text outside the fenced blocks."""
    return FENCE.sub("", text)


def inline_code(text):
    """Every `span` of inline code outside the fenced blocks (one that goes on over a line
    break, as a long error message may, is one span with a space there)."""
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose(text))]


def defined_flags(script):
    """The --flags a script accepts: its own, those common.py's parsers add, and those of the
    lessons and plumbing it imports (05 and 12 take training_tools.py's training flags)."""
    source = (REPO_DIR / script).read_text()
    imported = re.findall(r"""import_script\(["'](\w+)["']\)""", source)
    imported += [name for name in re.findall(r"^import (\w+)", source, re.MULTILINE)
                 if (REPO_DIR / f"{name}.py").exists()]
    sources = source + "".join((REPO_DIR / f"{name}.py").read_text()
                               for name in ["common", *imported])
    return set(re.findall(r"""["'](--[a-z][a-z0-9-]*)["']""", sources))


def command_problems(command):
    """What is wrong with one shell command that runs a script of this repository."""
    words = command.split()
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # OMP_NUM_THREADS=1 python ...
        words.pop(0)
    scripts = [word for word in words if word.endswith(".py")]
    if not words or words[0] not in ("python", "torchrun") or not scripts:
        return []  # pip, python -m venv, python -c ...: not ours to check
    script = scripts[0]
    if not (REPO_DIR / script).is_file():
        return [f"{command!r}: no script {script}"]
    flags = defined_flags(script)
    after_script = words[words.index(script) + 1:]  # before it, they are torchrun's own
    return [f"{command!r}: {script} has no flag {word.split('=')[0]}"
            for word in after_script
            if word.startswith("--") and word.split("=")[0] not in flags]


def shell_commands(text):
    """The commands in ```bash blocks (comments cut off, continued lines joined) and in inline
    code that starts with python or torchrun."""
    commands = []
    for block in code_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip()
            if line:
                commands.append(line)
    commands += [span for span in inline_code(text) if span.startswith(("python ", "torchrun "))]
    return commands


def github_anchor(heading):
    """The #anchor GitHub gives a heading: lower case, punctuation dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def link_problems(text):
    """Links and images whose file, or #anchor in this text, does not exist."""
    anchors = {github_anchor(heading) for heading in re.findall(r"^#+ (.+)$", prose(text),
                                                                 re.MULTILINE)}
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(text)):
        if target.startswith(("http://", "https://")):
            continue
        if target.startswith("#"):
            if target[1:] not in anchors:
                problems.append(f"no heading for the link {target}")
        elif not (REPO_DIR / target.split("#")[0]).exists():
            problems.append(f"no file {target}")
    return problems


def named_file_problems(text):
    """Files named in inline code (scripts, figures, texts) that do not exist."""
    problems = []
    for span in inline_code(text):
        for word in span.split():
            if (re.fullmatch(r"[\w./-]+\.(py|md|txt|png|json|pt2)", word)
                    and not word.startswith(MADE_BY_RUNS) and not (REPO_DIR / word).exists()):
                problems.append(f"no file {word}")
    return problems


def quote_problems(text):
    """Python blocks whose first line `# <script>` names a file that no longer holds them.

    A block may leave out lines with a line `...`; every piece between those must appear in the
    script as consecutive lines, with the same indentation relative to each other.
    """
    problems = []
    for block in code_blocks(text, "python"):
        first, _, rest = block.partition("\n")
        match = re.fullmatch(r"# (\S+\.py)", first.strip())
        if not match:
            problems.append(f"a Python block does not start with '# <script>': {first!r}")
            continue
        path = REPO_DIR / match.group(1)
        if not path.is_file():
            problems.append(f"a quote from {match.group(1)}, which does not exist")
            continue
        source = path.read_text().splitlines()
        pieces = re.split(r"^\.\.\.\n", rest, flags=re.MULTILINE)
        for piece in pieces:
            wanted = textwrap.dedent(piece).rstrip("\n").splitlines()
            if not wanted:
                continue
            found = any(
                textwrap.dedent("\n".join(source[start:start + len(wanted)])).splitlines()
                == wanted
                for start in range(len(source) - len(wanted) + 1))
            if not found:
                problems.append(f"{match.group(1)} no longer has:\n" + "\n".join(wanted))
    return problems


# ---- The guide as it is -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def guide():
    return GUIDE.read_text()


def test_every_script_it_names_exists(guide):
    named = set(re.findall(r"\b\d\d_[a-z_]+\.py\b", guide))
    assert len(named) >= 12  # 01-12
    assert [name for name in sorted(named) if not (REPO_DIR / name).is_file()] == []


def test_every_command_runs_a_real_script_with_real_flags(guide):
    commands = shell_commands(guide)
    assert len(commands) >= 15
    assert [problem for command in commands for problem in command_problems(command)] == []


def test_every_link_and_image_exists(guide):
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", guide)
    assert len(images) >= 6  # the figures of the run
    assert link_problems(guide) == []


def test_every_file_it_names_exists(guide):
    assert named_file_problems(guide) == []


def test_every_quoted_block_is_still_in_its_script(guide):
    assert len(code_blocks(guide, "python")) >= 8
    assert quote_problems(guide) == []


def script_sections(text):
    """{script: the text of its section} for every heading that names a numbered script."""
    parts = re.split(r"^(#{2,3} .+)$", prose_with_fences(text), flags=re.MULTILINE)
    sections = {}
    for heading, body in zip(parts[1::2], parts[2::2]):
        match = re.search(r"\((\d\d_\w+\.py)\)", heading)
        if match:
            sections[match.group(1)] = body
    return sections


def prose_with_fences(text):
    """The text with every fenced block's lines indented, so that a # inside one is no heading."""
    return FENCE.sub(lambda match: "\n".join("    " + line
                                             for line in match.group(0).splitlines()), text)


def test_every_script_has_a_section_with_a_command_code_output_and_a_try(guide):
    sections = script_sections(guide)
    scripts = sorted(path.name for path in REPO_DIR.glob("[0-9][0-9]_*.py"))
    assert sorted(sections) == scripts  # 01-12, one section each
    for script, body in sections.items():
        for needed in ("```bash", "```python", "```text", "**Try:**"):
            assert needed in body.replace("    ```", "```"), f"{script}: no {needed}"


def test_it_has_the_three_diagrams(guide):
    diagrams = code_blocks(guide, "mermaid")
    assert len(diagrams) >= 3
    loop = next(diagram for diagram in diagrams if "optimizer.step()" in diagram)
    for step in range(1, 8):  # the seven steps of the training loop, in the cycle
        assert f"S{step}[\"{step} " in loop


def test_readme_links_to_it_and_shows_two_figures():
    readme = README.read_text()
    assert "(GUIDE.md)" in readme.split("## Quickstart")[0]  # near the top
    assert "docs/figures/training_curves.png" in readme
    assert "docs/figures/predictions.png" in readme
    assert link_problems(readme) == []


def test_readme_commands_are_real_and_print_the_transfer_experiment():
    commands = shell_commands(README.read_text())
    assert [problem for command in commands for problem in command_problems(command)] == []
    # The transfer table is reproduced by two printed commands: 05 on five classes, 09 on the
    # five others from its checkpoint.
    train = [c for c in commands if "05_train.py" in c and "--classes" in c]
    transfer = [c for c in commands if "09_transfer_learning.py" in c and "--compare" in c]
    assert train and transfer
    checkpoint_dir = train[0].split("--checkpoint-dir")[1].split()[0]
    assert f"--backbone {checkpoint_dir}/best.pt" in transfer[0]


# ---- The checks find what they are for --------------------------------------------------------
def test_a_quote_that_was_edited_in_the_script_is_found():
    edited = "```python\n# 05_train.py\n        optimizer.zero_grad(set_to_none=False)\n```\n"
    assert quote_problems(edited) and "05_train.py no longer has" in quote_problems(edited)[0]
    kept = "```python\n# 05_train.py\n        loss.backward()\n...\n    return mean_loss, correct.item() / seen\n```\n"
    assert quote_problems(kept) == []
    # Indentation counts: a line moved out of its block is not the same code.
    moved = "```python\n# 05_train.py\nloss.backward()\n    optimizer.step()  # 7. Update every weight from its gradient (SGD: a step against it)\n```\n"
    assert quote_problems(moved)


def test_a_missing_script_flag_image_or_file_is_found():
    assert command_problems("python 13_missing.py")
    assert command_problems("OMP_NUM_THREADS=1 python 09_transfer_learning.py --nope")
    assert command_problems("python 05_train.py --epochs 3 --learning-rate 0.1")
    assert command_problems("torchrun --standalone --nproc_per_node=2 12_distributed.py --nope")
    assert not command_problems("torchrun --standalone --nproc_per_node=2 12_distributed.py "
                                "--fake-data --device cpu")
    assert link_problems("![curves](docs/figures/no_such_figure.png)")
    assert link_problems("see [the loop](#no-such-heading)")
    assert not link_problems("# The loop\nsee [the loop](#the-loop)")
    assert named_file_problems("run `benchmarks/no_such_script.py`")
    assert not named_file_problems("it writes `outputs/anything.png`")
