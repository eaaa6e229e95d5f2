import pytest

from tests.support import services, testenv


@pytest.fixture(scope="session")
def site():
    """libvirtd running, test users, the small image built and the test site written."""
    started = services.ensure_libvirtd()
    testenv.ensure_users()
    small = testenv.build_image("small")
    images = {"busybox": (small, "trusted")}
    testenv.write_site(images)
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
