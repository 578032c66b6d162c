"""Fixtures for the real-browser tests: tools, fake media, one `streamai serve` in a loopback namespace."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamai.testing import browser

ARTIFACTS = browser.ROOT / "test-artifacts"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser_tools() -> None:
    reason = browser.ensure_browser_tools(install=True)
    if reason:
        pytest.skip(f"browser tests need: {reason}")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-media")


@pytest.fixture(scope="session")
def camera(media_dir: Path) -> Path:
    return browser.write_fake_camera(media_dir / "camera.y4m", seconds=2)


@pytest.fixture(scope="session")
def tone(media_dir: Path) -> Path:
    return browser.write_fake_tone(media_dir / "tone.wav")


@pytest.fixture(scope="session")
def server(browser_tools: None) -> Iterator[browser.ServerProcess]:
    ARTIFACTS.mkdir(exist_ok=True)
    with browser.browser_server(ARTIFACTS / "browser") as srv:
        yield srv


@pytest.fixture(scope="session")
def served_pipelines(server: browser.ServerProcess) -> list[str]:
    status, body = server.get("/v1/pipelines")
    assert status == 200, body
    return [p["name"] for p in body["pipelines"]]


@pytest.fixture
def drive(server: browser.ServerProcess) -> Any:
    """Runs one driver scenario; saves its result as test-artifacts/browser/<name>.json."""

    def run(name: str, scenario: dict[str, Any], timeout: float = 150.0) -> dict[str, Any]:
        config = {"base": server.base, "adminToken": server.admin_token, **scenario}
        result = browser.run_driver(server.ns, config, timeout=timeout)
        out = ARTIFACTS / "browser"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        if not result.get("ok"):
            pytest.fail(
                f"browser scenario {name!r} failed: {result.get('error')}\n"
                f"--- driver stderr ---\n{result.get('stderr', '')}\n"
                f"--- page console ---\n" + "\n".join(result.get("console", [])) + "\n"
                f"--- server log ---\n{server.log_tail()}",
                pytrace=False,
            )
        return result

    return run
