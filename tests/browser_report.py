"""The security monitor's printable HTML report in a real browser: Debian's headless Chromium,
driven by Selenium through Debian's chromedriver.

Usage: python3 tests/browser_report.py ARTIFACT_DIR REPORT.html:LANG:HEADING ...

Each REPORT is opened from disk; its <html lang> must be LANG and its first heading HEADING.
The page must render with no console errors and load nothing but itself (the report promises to
be self-contained). A screenshot and a printed PDF of each report go to ARTIFACT_DIR. Prints one
line per report; exits non-zero on the first failure.
"""

import base64
import json
import os
import pathlib
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.print_page_options import PrintOptions

# Debian's packages, never a browser or driver that Selenium Manager would download.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def check(condition, message):
    """An assertion that still runs under `python3 -O`."""
    if not condition:
        raise AssertionError(message)


def start_browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in [
        "--headless=new",
        # Tests run as root in containers, where Chromium's sandbox cannot start.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1100,1400",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def main(artifact_dir, reports):
    driver = start_browser()
    try:
        for spec in reports:
            path, lang, heading = spec.split(":", 2)
            url = pathlib.Path(path).resolve().as_uri()
            driver.get(url)
            name = pathlib.Path(path).stem
            check(
                driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang,
                f"{name}: <html lang> is not {lang}",
            )
            first = driver.find_element(By.TAG_NAME, "h1").text.strip()
            check(first == heading, f"{name}: first heading is {first!r}, not {heading!r}")
            rows = driver.find_elements(By.CSS_SELECTOR, "table tr")
            check(len(rows) > 5, f"{name}: only {len(rows)} table rows rendered")

            console = driver.get_log("browser")
            errors = [e["message"] for e in console if e["level"] == "SEVERE"]
            check(not errors, f"{name}: console errors: {errors}")
            for entry in driver.get_log("performance"):
                message = json.loads(entry["message"])["message"]
                if message["method"] == "Network.requestWillBeSent":
                    requested = message["params"]["request"]["url"]
                    check(
                        requested == url or requested.startswith("data:"),
                        f"{name}: the report loaded something besides itself: {requested}",
                    )

            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1100, max(800, min(int(height), 8000)))
            check(
                driver.save_screenshot(os.path.join(artifact_dir, f"{name}.png")),
                f"{name}: screenshot failed",
            )
            pdf = base64.b64decode(driver.print_page(PrintOptions()))
            check(pdf.startswith(b"%PDF"), f"{name}: printing gave no PDF")
            with open(os.path.join(artifact_dir, f"{name}.pdf"), "wb") as out:
                out.write(pdf)
            print(f"report: {name} ok (lang={lang}, {len(rows)} rows, {len(pdf)} bytes printed)",
                  flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
