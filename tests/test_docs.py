"""The docs site: `mkdocs build --strict` passes (no broken link, anchor or reference), the pages
generated from the code list every model kind and every config key, and every key is documented."""
import html
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from dermstack.catalogue import rows as param_rows
from dermstack.config import RunConfig, reference
from dermstack.registry import ensemble_methods, method_names, model_kinds

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def page_text(site: Path, page: str) -> str:
    """A built page's text, tags removed and entities decoded."""
    return _text((site / page / "index.html").read_text())


def table_rows(site: Path, page: str) -> list[tuple[str, ...]]:
    """The text of each cell of each table row of a built page."""
    source = (site / page / "index.html").read_text()
    return [tuple(_text(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S))
            for row in re.findall(r"<tr>(.*?)</tr>", source, re.S)]


@pytest.mark.slow
def test_site_builds_strict(site):
    for page in ("getting-started", "install", "reference/config", "reference/kinds", "reference/api", "results"):
        assert (site / page / "index.html").is_file(), page


@pytest.mark.parametrize("page", ["config", "kinds"])
def test_generated_pages_say_where_their_content_is_and_the_site_replaces_it(page):
    # the source files read empty on GitHub, where the README links to them
    import importlib.util

    spec = importlib.util.spec_from_file_location("generated_hook", ROOT / "docs" / "hooks" / "generated.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    source = (ROOT / "docs" / "reference" / f"{page}.md").read_text()
    assert "mkdocs build" in source.split("<!-- generated:")[1]
    built = hook.on_page_markdown(source)
    assert "not in this file" not in built and "<!--" not in built and hook.GENERATORS[page]() in built


@pytest.mark.slow
def test_kinds_page_lists_the_registry(site):
    text, rows = page_text(site, "reference/kinds"), table_rows(site, "reference/kinds")
    assert "generated:" not in text
    for kind in model_kinds().values():
        assert f"{kind.name}: {kind.description}" in text
        for row in param_rows(kind.params):
            assert row in rows, (kind.name, row)
    methods = ensemble_methods()
    for name in method_names():
        if name in methods:  # auto and none are choices, not methods
            assert f"{name}: {methods[name].description}" in text


@pytest.mark.slow
def test_config_page_lists_every_section_and_key(site):
    text, rows = page_text(site, "reference/config"), table_rows(site, "reference/config")
    for header, cls in reference.sections():
        assert header in text
        for key, kind, default, _ in reference.rows(cls):
            assert (key, kind, default) in [r[:3] for r in rows], (header, key)


def test_every_config_key_has_a_doc_comment():
    missing = [f"{header} {key}" for header, cls in reference.sections()
               for key, _, _, doc in reference.rows(cls) if not doc]
    assert not missing, f"add a `#:` comment above each of these fields: {missing}"


def test_reference_types_read_as_toml():
    rows = {header: {key: (kind, default) for key, kind, default, _ in reference.rows(cls)} for header, cls in reference.sections()}
    assert rows["[cv]"]["n_splits"] == ("int ≥ 2, ≤ 100", "5")
    assert rows["[data]"]["path"] == ("string", "unset")
    assert rows["[features]"]["image"] == ('true | false | "auto"', '"auto"')
    assert rows["[[models]]"]["seeds"] == ("non-empty list of int ≥ 0, ≤ 2147483647", "[0]")
    assert '"ham10000"' in rows["[data]"]["format"][0] and '"mean"' in rows["[ensemble]"]["method"][0]


#: pages whose ```toml blocks are run configs a reader copies (adding-a-kind's are a pyproject and a plugin kind)
CONFIG_PAGES = ("docs/configuration.md", "docs/getting-started.md", "docs/studies.md", "README.md")


@pytest.mark.parametrize("page", CONFIG_PAGES)
def test_documented_configs_validate(page):
    # the annotated config once named a model it did not define, and failed for the reader who copied it
    # a block inside a list item is indented as a whole
    blocks = re.findall(r"^( *)```toml\n(.*?)^\1```", (ROOT / page).read_text(), re.S | re.M)
    assert blocks, page
    for i, (_, block) in enumerate(blocks):
        RunConfig.from_dict(tomllib.loads(textwrap.dedent(block)), f"{page} toml block #{i + 1}")
