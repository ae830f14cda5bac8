"""The login page and the demo application in a real browser: Debian's headless Chromium,
driven by Selenium through Debian's chromedriver, against a running novads.

Usage: python3 tests/browser_login.py BASE CLIENT_ID REDIRECT_URI USERNAME PASSWORD ARTIFACT_DIR

CLIENT_ID is a public client whose REDIRECT_URI is a page of novads that answers 200; USERNAME
and PASSWORD are a demo user's, also used for the demo application at BASE/demo/. Prints one
line per scenario; exits non-zero on the first failure. Screenshots go to ARTIFACT_DIR.
"""

import base64
import hashlib
import json
import os
import secrets
import sys
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

# Debian's packages, never a browser or driver that Selenium Manager would download.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
WAIT_SECONDS = 15


def step(message):
    print(f"browser: {message}", flush=True)


def check(condition, message):
    """An assertion that still runs under `python3 -O`."""
    if not condition:
        raise AssertionError(message)


def start_browser(javascript, accept_language):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in [
        "--headless=new",
        # Tests run as root in containers, where Chromium's sandbox cannot start.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        # A fixed viewport keeps screenshots comparable between runs.
        "--window-size=1000,900",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # The browser itself must not reach out either; the page-level check below is the
        # assertion, this only keeps a test run off the network.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ]:
        options.add_argument(argument)
    prefs = {"intl.accept_languages": accept_language}
    if not javascript:
        prefs["profile.managed_default_content_settings.javascript"] = 2
    options.add_experimental_option("prefs", prefs)
    # Console messages (CSP violations land there) and every network event of the pages.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Observer:
    """Collects what the pages did: console messages, requests, document responses."""

    def __init__(self, driver):
        self.driver = driver
        self.console = []
        self.requests = []
        self.documents = []

    def drain(self):
        self.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            method, params = message["method"], message.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Network.responseReceived" and params.get("type") == "Document":
                self.documents.append(params["response"])

    def assert_clean(self, base):
        self.drain()
        problems = [
            e["message"]
            for e in self.console
            if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]
        ]
        check(not problems, f"console errors or CSP violations: {problems}")
        check(self.requests, "no request was observed at all")
        for url in self.requests:
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme == "data":
                continue  # the JavaScript probe page, built in this script
            check(
                parsed.scheme in ("http", "https") and parsed.hostname in LOOPBACK,
                f"a request left loopback: {url}",
            )
        # Every page novads served carries its strict policy: no script can run there at all.
        ours = [d for d in self.documents if d["url"].startswith(base)]
        check(ours, "no document from novads was observed")
        for document in ours:
            headers = {k.lower(): v for k, v in document["headers"].items()}
            csp = headers.get("content-security-policy", "")
            directives = dict(
                (part.split(None, 1) + [""])[:2] for part in csp.split(";") if part.strip()
            )
            scripts = directives.get("script-src", directives.get("default-src"))
            check(scripts == "'none'", f"{document['url']}: Content-Security-Policy {csp!r}")


def pkce_pair():
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(base, client_id, redirect_uri, extra=None):
    """A fresh authorization request of our own: its state, nonce and PKCE verifier."""
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid profile",
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **(extra or {}),
    }
    url = f"{base}/oidc/authorize?{urllib.parse.urlencode(query)}"
    return url, {"state": state, "nonce": nonce, "verifier": verifier}


def wait_for(driver, condition):
    """Waits for a page that a key press or click navigated to, until it is fully loaded."""
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.execute_script("return document.readyState") == "complete" and condition(d)
    )


def active_id(driver):
    element = driver.switch_to.active_element
    return element.get_attribute("id") or element.tag_name


def wait_for_focus(driver, expected, what):
    """Autofocus lands at the page's next rendering, which can come after the load event."""
    try:
        WebDriverWait(driver, WAIT_SECONDS).until(lambda d: active_id(d) == expected)
    except TimeoutException:
        found = active_id(driver)
        raise AssertionError(f"{what}: focus is on {found!r}, not {expected!r}") from None


def focus_is_visible(driver):
    """Keyboard users must see where they are: the focused element draws an outline."""
    style = driver.execute_script(
        "const s = getComputedStyle(document.activeElement);"
        "return [s.outlineStyle, s.outlineWidth];"
    )
    return style[0] != "none" and style[1] not in ("0px", "")


def login_page_texts(driver, expected_lang):
    """Checks one rendering of the login page; returns its visible texts."""
    html = driver.find_element(By.TAG_NAME, "html")
    check(
        html.get_attribute("lang") == expected_lang,
        f"<html lang> is {html.get_attribute('lang')!r}, expected {expected_lang!r}",
    )
    check(not driver.find_elements(By.TAG_NAME, "script"), "the login page carries a script")
    texts = {"title": driver.title, "h1": driver.find_element(By.TAG_NAME, "h1").text}
    for field in ("username", "password"):
        field_input = driver.find_element(By.ID, field)
        labels = driver.find_elements(By.CSS_SELECTOR, f"label[for='{field}']")
        check(len(labels) == 1, f"{field}: {len(labels)} labels point at it")
        label = labels[0].text.strip()
        # The accessible name comes from Chromium's accessibility tree: it is what a screen
        # reader announces, so this proves the label is really tied to the input.
        check(
            label and field_input.accessible_name == label,
            f"{field}: accessible name {field_input.accessible_name!r}, label {label!r}",
        )
        check(field_input.is_displayed(), f"{field} is not visible")
        texts[field] = label
    texts["submit"] = driver.find_element(By.CSS_SELECTOR, "button[type=submit]").text
    switch = driver.find_element(By.CSS_SELECTOR, "nav a[hreflang]")
    other = switch.get_attribute("hreflang")
    check(
        other and other != expected_lang and switch.get_attribute("lang") == other,
        f"language switch link: hreflang={other!r} lang={switch.get_attribute('lang')!r}",
    )
    texts["switch"] = switch.text
    check(all(texts.values()), f"empty text on the {expected_lang} page: {texts}")
    return texts, switch.get_attribute("href")


def keys(driver, *sequence):
    """Types into whatever has focus, as a keyboard does: no element is clicked or targeted."""
    chain = ActionChains(driver)
    for item in sequence:
        chain.send_keys(item)
    chain.perform()


def shift_tab(driver, times=1):
    """Moves focus backwards: Shift held down over the Tab presses."""
    chain = ActionChains(driver).key_down(Keys.SHIFT)
    for _ in range(times):
        chain.send_keys(Keys.TAB)
    chain.key_up(Keys.SHIFT).perform()


def scenario_languages(driver, args, shots):
    # English through the browser's Accept-Language (set when the browser was started).
    url, _ = authorize_url(args["base"], args["client_id"], args["redirect_uri"])
    driver.get(url)
    english, _ = login_page_texts(driver, "en")
    driver.save_screenshot(shots("login-en.png"))
    step("english page ok (lang=en)")

    # Latvian through ui_locales, which wins over Accept-Language.
    url, _ = authorize_url(
        args["base"], args["client_id"], args["redirect_uri"], {"ui_locales": "lv"}
    )
    driver.get(url)
    latvian, switch_href = login_page_texts(driver, "lv")
    same = [k for k in english if k != "switch" and english[k] == latvian[k]]
    check(not same, f"texts identical in both languages: {same}")
    driver.save_screenshot(shots("login-lv.png"))
    step("latvian page ok (lang=lv)")

    # The switch link of the Latvian page gives the English page of the same request.
    driver.get(switch_href)
    switched, _ = login_page_texts(driver, "en")
    check(switched == english, f"switched page differs: {switched} vs {english}")
    step("language switch ok")


def submit_by_keyboard(driver, username, password):
    """From a fresh login page: the username field has focus, Tab moves on, Enter submits."""
    wait_for_focus(driver, "username", "a fresh login page")
    keys(driver, username, Keys.TAB)
    check(active_id(driver) == "password", f"Tab from username went to {active_id(driver)!r}")
    keys(driver, password, Keys.TAB)
    check(active_id(driver) == "button", f"Tab from password went to {active_id(driver)!r}")
    check(focus_is_visible(driver), "the focused submit button has no visible outline")
    keys(driver, Keys.ENTER)


def scenario_error_state(driver, args, shots):
    messages = []
    # An unknown user and a known user with a wrong password must read exactly alike.
    for username in ("nobody@" + args["username"].split("@")[-1], args["username"]):
        url, _ = authorize_url(args["base"], args["client_id"], args["redirect_uri"])
        driver.get(url)
        submit_by_keyboard(driver, username, "not-the-password")
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=alert]"))
        alert = driver.find_element(By.CSS_SELECTOR, "[role=alert]")
        check(alert.is_displayed() and alert.text.strip(), "the error is not visible")
        messages.append(alert.text.strip())
        check(
            driver.current_url.startswith(args["base"] + "/oidc/"),
            f"a failed sign-in left the provider: {driver.current_url}",
        )
        check(
            driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en",
            "the error page changed language",
        )
        for field in ("username", "password"):
            element = driver.find_element(By.ID, field)
            check(element.get_attribute("aria-invalid") == "true", f"{field} not aria-invalid")
            described = (element.get_attribute("aria-describedby") or "").split()
            check(
                alert.get_attribute("id") in described,
                f"{field} is not described by the error: aria-describedby={described}",
            )
            for target in described:
                check(driver.find_elements(By.ID, target), f"{field}: no element #{target}")
        check(
            driver.find_element(By.ID, "username").get_attribute("value") == username,
            "the username was not kept",
        )
        check(
            driver.find_element(By.ID, "password").get_attribute("value") == "",
            "the password was sent back into the page",
        )
        # The username is kept, so the password is what to type next; the order stays
        # username, password, submit, language link.
        wait_for_focus(driver, "password", "after an error")
        check(focus_is_visible(driver), "the focused password field has no visible outline")
        shift_tab(driver)
        check(active_id(driver) == "username", f"Shift+Tab went to {active_id(driver)!r}")
        keys(driver, Keys.TAB, Keys.TAB)
        check(active_id(driver) == "button", f"Tab order reached {active_id(driver)!r}")
        keys(driver, Keys.TAB)
        focused = driver.switch_to.active_element
        check(
            focused.tag_name == "a" and focused.get_attribute("hreflang"),
            "the language link does not follow the submit button",
        )
    check(messages[0] == messages[1], f"the errors tell users apart: {messages}")
    shift_tab(driver, 2)  # back to the password field for the screenshot
    driver.save_screenshot(shots("login-error.png"))
    step("error state ok")


def scenario_keyboard_sign_in(driver, args, _shots):
    url, flow = authorize_url(args["base"], args["client_id"], args["redirect_uri"])
    driver.get(url)
    submit_by_keyboard(driver, args["username"], args["password"])
    wait_for(driver, lambda d: d.current_url.startswith(args["redirect_uri"]))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(driver.current_url).query)
    check(query.get("state") == [flow["state"]], f"state {query.get('state')} is not ours")
    check(query.get("iss") == [args["base"]], f"iss {query.get('iss')}")
    check(len(query.get("code", [])) == 1 and query["code"][0], "no code in the redirect")
    step("keyboard-only sign-in ok")

    # The code is real: it redeems for tokens bound to this very request's nonce.
    form = urllib.parse.urlencode(
        {
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": args["redirect_uri"],
            "client_id": args["client_id"],
            "code_verifier": flow["verifier"],
        }
    ).encode()
    with urllib.request.urlopen(f"{args['base']}/oidc/token", data=form, timeout=10) as answer:
        tokens = json.load(answer)
    payload = tokens["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    check(claims["nonce"] == flow["nonce"], f"nonce {claims['nonce']!r} is not ours")
    check(claims["aud"] in (args["client_id"], [args["client_id"]]), f"aud {claims['aud']!r}")
    check(claims.get("preferred_username") == args["username"], f"claims {claims}")
    step("code exchanged ok")


def scenario_demo(driver, args, shots):
    """What a person does after `novads dev`: open the demo app, click through, see who."""
    base = args["base"]
    driver.get(f"{base}/demo/")
    driver.find_element(By.CSS_SELECTOR, "a[href='/demo/login']").click()
    wait_for(driver, lambda d: d.find_elements(By.ID, "username"))
    check(driver.current_url.startswith(f"{base}/oidc/authorize?"), driver.current_url)
    driver.find_element(By.ID, "username").click()
    driver.find_element(By.ID, "username").send_keys(args["username"])
    driver.find_element(By.ID, "password").click()
    driver.find_element(By.ID, "password").send_keys(args["password"])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(driver, lambda d: d.find_elements(By.TAG_NAME, "dl"))
    check(driver.current_url.startswith(f"{base}/demo/callback?"), driver.current_url)
    shown = {
        dt.text.strip(): dd.text.strip()
        for dt, dd in zip(
            driver.find_elements(By.CSS_SELECTOR, "dl dt"),
            driver.find_elements(By.CSS_SELECTOR, "dl dd"),
        )
    }
    username = driver.find_element(By.CSS_SELECTOR, "main p strong").text.strip()
    check(username == args["username"], f"signed in as {username!r}")
    driver.save_screenshot(shots("demo-signed-in.png"))
    step(
        f"demo shows username={username} subject={shown.get('Subject')} "
        f"realm={shown.get('Realm')} groups={shown.get('Groups')}"
    )
    step("demo sign-in ok")


def main(base, client_id, redirect_uri, username, password, artifact_dir):
    for binary in (CHROMIUM, CHROMEDRIVER):
        check(
            os.access(binary, os.X_OK),
            f"{binary} is missing (apt-get install chromium chromium-driver)",
        )
    os.makedirs(artifact_dir, exist_ok=True)
    args = {
        "base": base.rstrip("/"),
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "username": username,
        "password": password,
    }

    def shots(name):
        return os.path.join(artifact_dir, name)

    # The login page and the keyboard flow with JavaScript off: the pages must not need it.
    driver = start_browser(javascript=False, accept_language="en-GB,en")
    try:
        observer = Observer(driver)
        # A page whose script would rename it proves the setting took effect.
        driver.get("data:text/html,<title>off</title><script>document.title='on'</script>")
        check(driver.title == "off", "JavaScript is still enabled")
        step("javascript is disabled")
        # Drained after each scenario, so that no event outgrows chromedriver's log buffer.
        for scenario in (scenario_languages, scenario_error_state, scenario_keyboard_sign_in):
            scenario(driver, args, shots)
            observer.drain()
        observer.assert_clean(args["base"])
    except BaseException:
        driver.save_screenshot(shots("failure.png"))
        raise
    finally:
        driver.quit()

    # The demo application as a person meets it: an ordinary browser with JavaScript on.
    driver = start_browser(javascript=True, accept_language="en-GB,en")
    try:
        observer = Observer(driver)
        scenario_demo(driver, args, shots)
        observer.assert_clean(args["base"])
    except BaseException:
        driver.save_screenshot(shots("failure.png"))
        raise
    finally:
        driver.quit()
    step("no console errors, no CSP violations")
    step("every request stayed on loopback")


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    main(*sys.argv[1:])
