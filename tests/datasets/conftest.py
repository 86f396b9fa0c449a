from tests.datasets.s3server import s3_bucket, s3_server  # noqa: F401 (fixtures)
