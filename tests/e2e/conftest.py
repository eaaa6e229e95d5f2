import pytest

from tests.support import services, testenv


@pytest.fixture(scope="session")
def site():
    """libvirtd running, test users, the small image built and the test site written."""
    started = services.ensure_libvirtd()
    images = testenv.small_site()
    yield {"images": images}
    services.stop_libvirtd(started)


@pytest.fixture(scope="session")
def debian_image(site):
    image = testenv.build_image("debian")
    site["images"]["debian12"] = (image, "trusted")
    testenv.write_site(site["images"])
    return image


@pytest.fixture(autouse=True)
def no_leftovers(site):
    """Every test must leave no domain and no job directory behind."""
    before = testenv.leftovers()
    assert before == [], f"left over before the test: {before}"
    yield
    left = testenv.leftovers()
    assert left == [], f"left over after the test: {left}"
