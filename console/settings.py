"""Settings, read from the environment.

With no environment set the console runs on the embedded default: SQLite, a filesystem
Celery broker and the simulated cluster, all kept under ./var. DATABASE_URL, REDIS_URL
(or CELERY_BROKER_URL) and CLUSTER_BACKEND=kubernetes switch to the real parts.
CONSOLE_ENV=production refuses to start with an unsafe default.
"""

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from console.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("CONSOLE_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

CONSOLE_ENV = env_str("CONSOLE_ENV", "development")
if CONSOLE_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("CONSOLE_ENV must be 'development' or 'production'")
PRODUCTION = CONSOLE_ENV == "production"


def _development_secret_key() -> str:
    # A random key kept on disk so sessions survive restarts of a laptop console.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env_str("SECRET_KEY") or ("" if PRODUCTION else _development_secret_key())
# Encrypts dataset credentials at rest; defaults to a key derived from SECRET_KEY.
CREDENTIALS_KEY = env_str("CREDENTIALS_KEY")
DEBUG = env_bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

if PRODUCTION:
    problems = []
    if len(SECRET_KEY) < 32:
        problems.append("SECRET_KEY must be set to at least 32 random characters")
    if DEBUG:
        problems.append("DEBUG must be off")
    if not ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must be set")
    if not env_str("DATABASE_URL"):
        problems.append("DATABASE_URL must be set (SQLite is for the embedded default only)")
    if problems:
        raise ImproperlyConfigured("Refusing to start in production: " + "; ".join(problems))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "console",
    "queues",
    "datasets",
    "services",
    "auth.apps.AccessConfig",
    "deploy",
    "gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.cluster",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'console.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, worker and watcher share one SQLite file: wait for locks, don't fail.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "services:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve straight from the source folders while developing; production serves collectstatic output.
WHITENOISE_USE_FINDERS = not PRODUCTION

SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "auth.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "console.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": [],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "console.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Inference console API",
    "DESCRIPTION": "Create and manage GPU inference services, queues and datasets.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI is served from the vendored sidecar package: no CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ---------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", REDIS_URL or "")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = VAR_DIR / "celery" / "queue"
    _processed_dir = VAR_DIR / "celery" / "processed"
    _queue_dir.mkdir(parents=True, exist_ok=True)
    _processed_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_processed_dir),
        # Exchange tables; kombu's default is ./control in the working directory.
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE = {
    "gateway-usage-rollup": {
        "task": "gateway.tasks.rollup_usage",
        "schedule": env_float("USAGE_ROLLUP_SECONDS", 15.0),
    },
    "repair-drift": {
        "task": "deploy.tasks.repair_drift",
        "schedule": env_float("REPAIR_INTERVAL_SECONDS", 30.0),
    },
    "sample-queue-usage": {"task": "queues.tasks.sample_queue_usage", "schedule": 60.0},
    "disable-unused-inference-keys": {"task": "auth.tasks.disable_unused_inference_keys", "schedule": 3600.0},
}
# Queue usage samples (one a minute per queue and flavor) older than this are pruned.
QUEUE_USAGE_RETENTION_DAYS = env_int("QUEUE_USAGE_RETENTION_DAYS", 14)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Cluster --------------------------------------------------------------------------
CLUSTER_BACKEND = env_str("CLUSTER_BACKEND", "simulated")
if CLUSTER_BACKEND not in {"simulated", "kubernetes"}:
    raise ImproperlyConfigured("CLUSTER_BACKEND must be 'simulated' or 'kubernetes'")
KUBECONFIG = env_str("KUBECONFIG")
KUBE_CONTEXT = env_str("KUBE_CONTEXT")
# The one field manager every server-side apply of the console uses.
FIELD_MANAGER = "inference-console"
SERVICE_NAMESPACE = env_str("SERVICE_NAMESPACE", "inference")
CLUSTER_DOMAIN = env_str("CLUSTER_DOMAIN", "cluster.local")
SIMULATED_CLUSTER_NODES = env_str(
    "SIMULATED_CLUSTER_NODES", str(BASE_DIR / "deploy" / "simulated_nodes.json")
)
# Volumes (PVC folders) and the processes of Job pods on the simulated cluster.
SIMULATED_STATE_DIR = env_str("SIMULATED_STATE_DIR", str(VAR_DIR / "simulated"))
SIMULATED_CLUSTER_FAULTS = env_str("SIMULATED_CLUSTER_FAULTS", str(VAR_DIR / "faults.json"))
# Seconds a simulated pod spends pulling its image and then loading the model.
SIMULATED_PULL_SECONDS = env_float("SIMULATED_PULL_SECONDS", 3.0)
SIMULATED_LOAD_SECONDS = env_float("SIMULATED_LOAD_SECONDS", 5.0)
# A service still not Running this long after its last apply is failed by repair_drift.
SERVICE_START_DEADLINE_SECONDS = env_int("SERVICE_START_DEADLINE_SECONDS", 1800)
WATCH_POLL_SECONDS = env_float("WATCH_POLL_SECONDS", 1.0)

# --- Datasets and prewarm ---------------------------------------------------------------
# Prewarmed copies live in one PVC per dataset, `dataset-<name>`.
PREWARM_STORAGE_CLASS = env_str("PREWARM_STORAGE_CLASS")  # empty: the cluster's default
PREWARM_CACHE_SIZE = env_str("PREWARM_CACHE_SIZE", "100Gi")
PREWARM_IMAGE = env_str("PREWARM_IMAGE", "inference-console:latest")  # the console image (deploy/Dockerfile)
PREWARM_CPU = env_str("PREWARM_CPU", "2")
PREWARM_MEMORY = env_str("PREWARM_MEMORY", "4Gi")
PREWARM_POLL_SECONDS = env_float("PREWARM_POLL_SECONDS", 1.0)
# A prewarm whose pod has not started this long after the job was applied fails with the reason.
PREWARM_START_DEADLINE_SECONDS = env_float("PREWARM_START_DEADLINE_SECONDS", 900.0)

# --- Inference gateway and keys ---------------------------------------------------------
# The gateway (`python manage.py run_gateway`) is the only way into the models.
GATEWAY_HOST = env_str("GATEWAY_HOST", "127.0.0.1")
GATEWAY_PORT = env_int("GATEWAY_PORT", 8001)
# gRPC (Triton's 8001) through the gateway: its own port on GATEWAY_HOST; 0 turns it off.
GATEWAY_GRPC_PORT = env_int("GATEWAY_GRPC_PORT", 8002)
# The address users call, shown in the access panel's snippets (behind TLS in production).
GATEWAY_PUBLIC_URL = env_str("GATEWAY_PUBLIC_URL", f"http://{GATEWAY_HOST}:{GATEWAY_PORT}")
# The host:port gRPC clients dial (the snippets), when GATEWAY_GRPC_PORT is on.
GATEWAY_PUBLIC_GRPC = env_str("GATEWAY_PUBLIC_GRPC", f"{GATEWAY_HOST}:{GATEWAY_GRPC_PORT}")
# Namespace and pod labels of the gateway, for the NetworkPolicy in front of every model pod.
GATEWAY_NAMESPACE = env_str("GATEWAY_NAMESPACE", "inference-gateway")
# Keys unused this many days are disabled by a periodic task; 0 turns that off.
INFERENCE_KEY_DISABLE_AFTER_DAYS = env_int("INFERENCE_KEY_DISABLE_AFTER_DAYS", 90)
# How long a rotated key keeps working unless the rotation says otherwise.
INFERENCE_KEY_ROTATION_GRACE_HOURS = env_int("INFERENCE_KEY_ROTATION_GRACE_HOURS", 24)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"kubernetes": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}
