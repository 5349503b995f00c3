"""Settings from the environment the test harness gives each run:

* `ESAPP_DB`: the SQLite file (its own per proxy under test, in a tmp dir);
* `ESAPP_PUBLISH`: the proxy's publish base URL (django-grip's GRIP_PROXIES `control_uri`).

The proxy's Grip-Sig key is `changeme`, as Pushpin's default: django-grip verifies every
origin request with it (`key` in GRIP_PROXIES), and the events view refuses unsigned ones.
"""

import os

SECRET_KEY = "interop-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "esproject.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_eventstream",
]
MIDDLEWARE = ["django_grip.GripMiddleware"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("ESAPP_DB", "eventstream.sqlite3"),
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

GRIP_PROXIES = [
    {"control_uri": os.environ.get("ESAPP_PUBLISH", "http://127.0.0.1:5561"), "key": "changeme"}
]
EVENTSTREAM_STORAGE_CLASS = "django_eventstream.storage.DjangoModelStorage"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
