import httpx
from tests.serve.tap.conftest import Tap

def test_smoke(tap: Tap) -> None:
    for path in ["/capabilities", "/availability", "/tables"]:
        r = httpx.get(tap.url + path)
        print(path, r.status_code, r.text[:3000])
    r = httpx.post(tap.url + "/sync", data={"LANG": "ADQL", "QUERY": "SELECT TOP 3 * FROM catalogs.pulsars WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 100, 10, 30)) = 1", "REQUEST": "doQuery"})
    print(r.status_code, r.text[:5000])
    r = httpx.post(tap.url + "/sync", data={"LANG": "ADQL", "QUERY": "SELECT TOP 3 c.*, k.top_label FROM catalogs.test_catalog c JOIN skyclass.current_classification k ON k.object_id = c.object_id", "REQUEST": "doQuery"})
    print(r.status_code, r.text[:5000])
    assert False
