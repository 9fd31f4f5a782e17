"""Walk the web portal in a real browser (headless Chromium through selenium), as tests/portal.rs
drives it against a real `cairn serve`.

    python3 portal_browser.py BASE_URL DATA_DIR SHOTS_DIR ADMIN_TOKEN

BASE_URL is the server's plain listener on loopback; codes are read from DATA_DIR/outbox.jsonl
(the server's notifier without a gateway); screenshots go to SHOTS_DIR at desktop and phone
widths. The operator's token puts the account on the server's `small` plan, so that an upload
moves the storage bar visibly. Data the test needs from other devices (contacts, a second signed-in device, a note
changed elsewhere) is written through the /v1 API with urllib, as a phone would.

Every step asserts; the first failure ends the run with a non-zero status and a message.
Waits are for something to appear in the page or the outbox, each with a deadline.
"""
import base64
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

BASE, DATA_DIR, SHOTS, ADMIN_TOKEN = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4]
XSS = "<img src=x onerror=alert(1)>"
EMAIL = "walker%d@example.com" % os.getpid()
PASSWORD = "browser password 1"
DEADLINE = 30  # seconds for anything the page or the server is waited for

os.makedirs(SHOTS, exist_ok=True)


def step(name):
    print("portal_browser: " + name, flush=True)


# --- the API, as another device ---------------------------------------------------------------

def api(method, path, body=None, token=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=DEADLINE) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


def wait_for(what, check, timeout=DEADLINE):
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def code(purpose, seen_before):
    """The newest code for EMAIL and purpose that was not in the outbox before (`seen_before`)."""
    def newest():
        try:
            with open(os.path.join(DATA_DIR, "outbox.jsonl")) as f:
                lines = [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return None
        mine = [m for m in lines[seen_before:] if m["to"] == EMAIL and m["purpose"] == purpose]
        return mine[-1]["code"] if mine else None
    return wait_for(purpose + " code in the outbox", newest)


def outbox_len():
    try:
        with open(os.path.join(DATA_DIR, "outbox.jsonl")) as f:
            return sum(1 for l in f if l.strip())
    except FileNotFoundError:
        return 0


# --- the browser ------------------------------------------------------------------------------

os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium look for a driver online
opts = webdriver.ChromeOptions()
opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
opts_dir = tempfile.mkdtemp(prefix="cairn-chromium-")
tmp = None  # the files uploaded, removed at the end
for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--user-data-dir=" + opts_dir]:
    opts.add_argument(a)
d = webdriver.Chrome(options=opts, service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")))
d.set_page_load_timeout(DEADLINE)
wait = WebDriverWait(d, DEADLINE, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))


def go(path):
    d.get(BASE + path)


def at(path):
    wait.until(lambda d: d.current_url.split("?")[0] == BASE + path)


def status_of(form):
    return form.find_element(By.CSS_SELECTOR, ".status")


def wait_status(form, contains):
    s = status_of(form)
    wait.until(lambda _: contains in s.text)
    return s.text


def no_alert():
    try:
        a = d.switch_to.alert
        raise AssertionError("a script ran: alert " + repr(a.text))
    except NoAlertPresentException:
        pass


def no_injected_img():
    imgs = d.find_elements(By.CSS_SELECTOR, "main img")
    assert not imgs, "an <img> was injected into the page"


def shots(name):
    """The whole page (not only the window) at a desktop's and a phone's width."""
    for label, (w, h) in {"desktop": (1280, 900), "phone": (390, 844)}.items():
        d.set_window_size(w, h)
        height = d.execute_script("return document.documentElement.scrollHeight")
        shot = d.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": d.execute_script("return window.innerWidth"), "height": height, "scale": 1}})
        with open(os.path.join(SHOTS, "%s-%s.png" % (name, label)), "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    # At phone width nothing may need horizontal scrolling but tables (which scroll in a box).
    d.set_window_size(390, 844)
    overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, "%s is %dpx wider than a phone screen" % (name, overflow)
    d.set_window_size(1280, 900)


def field(id_):
    return d.find_element(By.ID, id_)


def send_code(form, purpose):
    """Press the form's "Send code" and return the code the outbox then holds."""
    before = outbox_len()
    form.find_element(By.CSS_SELECTOR, "button[data-send-code]").click()
    wait_status(form, "on its way")
    return code(purpose, before)


try:
    d.set_window_size(1280, 900)

    step("the sign-in form in the accessibility tree, and by keyboard")
    go("/portal/signin")
    d.execute_cdp_cmd("Accessibility.enable", {})
    nodes = d.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]
    named = {(n.get("role", {}).get("value"), n.get("name", {}).get("value")) for n in nodes if not n.get("ignored")}
    for want in [("textbox", "Email or phone number"), ("textbox", "Password"), ("button", "Sign in"),
                 ("form", "Sign in"), ("heading", "Sign in"), ("link", "Create an account")]:
        assert want in named, "accessibility tree lacks %r: %r" % (want, sorted(x for x in named if x[1]))
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    order = []
    for _ in range(5):
        el = d.switch_to.active_element
        order.append(el.get_attribute("id") or el.text)
        el.send_keys(Keys.TAB)
    assert order[:5] == ["Skip to content", "cairn", "identifier", "password", "Sign in"], order
    shots("signin")

    step("sign up through the pages, with the code from the outbox")
    go("/portal/signup")
    form = d.find_element(By.CSS_SELECTOR, "form[data-flow=signup]")
    field("identifier").send_keys(EMAIL)
    field("code").send_keys(send_code(form, "register"))
    field("nickname").send_keys("Walker")
    field("password").send_keys(PASSWORD)
    shots("signup")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    at("/portal/account")
    assert EMAIL in d.find_element(By.TAG_NAME, "main").text
    assert field("nickname").get_attribute("value") == "Walker"

    step("sign out, reset the forgotten password, sign in again with the keyboard alone")
    d.find_element(By.CSS_SELECTOR, "form.signout button").click()
    at("/portal/signin")
    d.find_element(By.LINK_TEXT, "Forgot password?").click()
    at("/portal/forgot")
    form = d.find_element(By.CSS_SELECTOR, "form[data-api='POST /password-reset']")
    field("identifier").send_keys(EMAIL)
    field("code").send_keys(send_code(form, "reset_password"))
    PASSWORD = "a new browser password"
    field("new_password").send_keys(PASSWORD)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    at("/portal/signin")
    field("identifier").send_keys(EMAIL + Keys.TAB + "a wrong password" + Keys.ENTER)
    wait_status(d.find_element(By.CSS_SELECTOR, "form[data-api='POST /portal/session']"), "bad_credentials")
    field("password").clear()
    field("password").send_keys(PASSWORD + Keys.ENTER)
    at("/portal/account")

    step("change a detail with a fresh code")
    form = d.find_element(By.CSS_SELECTOR, "form[data-api='PATCH /account']")
    field("nickname").clear()
    field("nickname").send_keys("Ada " + XSS)
    field("region").send_keys("GB")
    real = send_code(form, "change_details")
    field("code").send_keys("000000")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_status(form, "bad_code")
    field("code").clear()
    field("code").send_keys(real)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda _: field("nickname").get_attribute("value") == "Ada " + XSS)
    assert field("region").get_attribute("value") == "GB"
    no_alert()
    shots("account")

    step("another device signs in and writes contacts, an event and a note through /v1")
    status, phone = api("POST", "/v1/sessions", {"identifier": EMAIL, "password": PASSWORD,
                                                 "device": {"name": "Pixel phone", "model": "Pixel 8", "os": "Android"}})
    assert status == 201, (status, phone)
    token = phone["token"]
    status, _ = api("PUT", "/admin/accounts/%s/plan" % phone["account_id"], {"plan": "small"}, ADMIN_TOKEN)
    assert status == 200, status
    contacts = {
        "c1": {"vcard": "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ada Lovelace\r\nEND:VCARD", "fn": "Ada Lovelace",
               "emails": ["ada@example.com"], "tels": ["+441234567890"]},
        "c2": {"vcard": "BEGIN:VCARD\r\nEND:VCARD", "fn": XSS, "emails": [XSS + "@example.com"], "tels": []},
        "c3": {"name": "Charles Babbage"},
    }
    for cid, payload in contacts.items():
        status, body = api("PUT", "/v1/sync/contacts/" + cid, {"payload": payload}, token)
        assert status == 200, (status, body)
    status, _ = api("PUT", "/v1/sync/calendar/e1", {"payload": {"ical": "BEGIN:VCALENDAR\r\nEND:VCALENDAR", "uid": "e1",
                    "summary": "Dentist", "start": "2026-12-03T09:00:00Z", "end": "2026-12-03T09:30:00Z"}}, token)
    assert status == 200

    step("contacts open, render as text, and are searchable")
    go("/portal/contacts")
    records = d.find_element(By.ID, "records").text
    for want in ["Ada Lovelace", "ada@example.com", "+441234567890", XSS, "Charles Babbage"]:
        assert want in records, "contacts page lacks %r: %r" % (want, records)
    no_injected_img()
    no_alert()
    shots("contacts")
    field("q").send_keys("lovelace" + Keys.ENTER)
    wait.until(lambda _: "q=lovelace" in d.current_url)
    items = d.find_elements(By.CSS_SELECTOR, "#records li")
    assert [i.get_attribute("data-id") for i in items] == ["c1"], [i.text for i in items]
    go("/portal/calendar")
    assert "Dentist" in d.find_element(By.ID, "records").text
    shots("calendar")

    step("the storage bar before an upload")
    go("/portal/storage")
    used_before = int(d.find_element(By.ID, "usage").get_attribute("data-used"))
    drive_before = int(d.find_element(By.CSS_SELECTOR, "rect[data-service=drive]").get_attribute("width"))

    step("upload two files (one named like markup) with the progress bar, see them listed")
    tmp = tempfile.mkdtemp(prefix="cairn-upload-")
    big = os.path.join(tmp, "holiday.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(8 << 20))
    evil = os.path.join(tmp, XSS + ".txt")
    with open(evil, "w") as f:
        f.write("<script>alert(2)</script>")
    go("/portal/files")
    form = d.find_element(By.ID, "upload")
    field("files").send_keys(big + "\n" + evil)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#file-list tr.file")) == 2)
    names = sorted(e.text for e in d.find_elements(By.CSS_SELECTOR, "#file-list td.name"))
    assert names == sorted(["holiday.bin", XSS + ".txt"]), names
    no_injected_img()
    no_alert()
    shots("files")

    step("the storage bar moved")
    go("/portal/storage")
    used_after = int(d.find_element(By.ID, "usage").get_attribute("data-used"))
    drive_after = int(d.find_element(By.CSS_SELECTOR, "rect[data-service=drive]").get_attribute("width"))
    assert used_after >= used_before + (8 << 20), (used_before, used_after)
    assert drive_after > drive_before, (drive_before, drive_after)
    shots("storage")

    step("rename a file, then delete it")
    go("/portal/files")
    row = d.find_element(By.CSS_SELECTOR, "tr.file[data-path='holiday.bin']")
    row.find_element(By.TAG_NAME, "summary").click()
    to = row.find_element(By.NAME, "to")
    to.clear()
    to.send_keys("trips/holiday.bin" + Keys.ENTER)
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "tr.folder"))
    assert api("GET", "/v1/files?prefix=trips/", token=token)[1]["files"][0]["path"] == "trips/holiday.bin"
    row = d.find_element(By.CSS_SELECTOR, "tr.file")
    row.find_element(By.CSS_SELECTOR, "form.inline button").click()
    wait.until(lambda _: not d.find_elements(By.CSS_SELECTOR, "tr.file"))

    step("a note written here, changed on the phone, saved here again: a conflict, shown")
    go("/portal/notes/new")
    field("title").send_keys("Shopping")
    field("text").send_keys("milk\neggs")
    d.find_element(By.CSS_SELECTOR, "#note button[type=submit]").click()
    at("/portal/notes")
    link = d.find_element(By.CSS_SELECTOR, "#records li a.title")
    note_id = link.find_element(By.XPATH, "..").get_attribute("data-id")
    status, rec = api("GET", "/v1/sync/notes/" + note_id, token=token)
    assert status == 200 and rec["payload"] == {"title": "Shopping", "text": "milk\neggs"}, rec
    link.click()
    status, _ = api("PUT", "/v1/sync/notes/" + note_id, {"payload": {"title": "Shopping", "text": "bread"}}, token,
                    {"If-Match": '"%s"' % rec["version"]})
    assert status == 200
    field("text").send_keys("\nbutter")
    form = d.find_element(By.ID, "note")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_status(form, "changed elsewhere")
    assert "bread" in d.find_element(By.ID, "other-version").text
    shots("note-conflict")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    at("/portal/notes")
    assert api("GET", "/v1/sync/notes/" + note_id, token=token)[1]["payload"]["text"] == "milk\neggs\nbutter"

    step("sign out the phone from the security page")
    go("/portal/security")
    shots("security")
    row = d.find_element(By.CSS_SELECTOR, "tr[data-device='%s']" % phone["device_id"])
    assert "Pixel phone" in row.text
    row.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda _: not d.find_elements(By.CSS_SELECTOR, "tr[data-device='%s']" % phone["device_id"]))
    assert api("GET", "/v1/account", token=token)[0] == 401
    mine = d.find_elements(By.CSS_SELECTOR, "tbody tr[data-device]")
    assert any("web browser" in r.text and "this browser" in r.text for r in mine), [r.text for r in mine]

    step("a cross-origin form post is refused")
    # A page of another origin (same site: 127.0.0.1 on another port, so the SameSite cookie is
    # sent) posts a JSON-looking text/plain body that the sync API would take as a note.
    evil_page = ("<!doctype html><form id=f method=post enctype=text/plain action='%s/portal/api/v1/sync/notes/batch'>"
                 "<input name='{\"put\":[{\"id\":\"forged\",\"payload\":{}}],\"x\":\"' value='\"}'></form>"
                 "<script>document.getElementById('f').submit()</script>" % BASE).encode()

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(evil_page)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    d.get("http://127.0.0.1:%d/" % srv.server_address[1])
    wait.until(lambda _: d.current_url.startswith(BASE + "/portal/api/v1/sync/notes/batch"))
    srv.shutdown()
    status, body = api("POST", "/v1/sessions", {"identifier": EMAIL, "password": PASSWORD, "device": {"name": "check"}})
    token = body["token"]
    assert api("GET", "/v1/sync/notes/forged", token=token)[0] == 404, "the forged post wrote a note"
    assert "csrf_rejected" in d.find_element(By.TAG_NAME, "body").text, d.page_source[:500]

    step("delete the account, code-confirmed, after the list of what goes")
    go("/portal/delete")
    text = d.find_element(By.TAG_NAME, "main").text
    for want in ["your files", "device backups", "synced contacts records", "synced notes records"]:
        assert want in text, (want, text)
    shots("delete")
    form = d.find_element(By.CSS_SELECTOR, "form[data-api='DELETE /account']")
    field("code").send_keys(send_code(form, "delete_account"))
    field("confirm").send_keys("DELETE")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    at("/portal/signin")
    status, _ = api("POST", "/v1/sessions", {"identifier": EMAIL, "password": PASSWORD, "device": {"name": "x"}})
    assert status == 401, status
    go("/portal/account")
    at("/portal/signin")
    no_alert()
    step("all passed")
except Exception:
    try:
        d.save_screenshot(os.path.join(SHOTS, "failure.png"))
        print("portal_browser: failed at " + d.current_url, flush=True)
    except Exception:
        pass
    raise
finally:
    d.quit()
    shutil.rmtree(opts_dir, ignore_errors=True)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
