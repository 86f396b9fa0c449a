from tests.datasets.hubserver import hub_server  # noqa: F401 (fixtures)
from tests.datasets.modelscopeserver import modelscope_server  # noqa: F401 (fixtures)
from tests.datasets.s3server import s3_bucket, s3_server, throttled_s3_server  # noqa: F401 (fixtures)
