import boto3
from botocore.config import Config


def test_the_s3_server_lists_and_serves_ranges(s3_server, s3_bucket):
    s3_server.put_file(s3_bucket, "m/config.json", b'{"architectures": ["X"]}')
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, response_checksum_validation="when_required"),
    )
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="m/")
    assert [o["Key"] for o in listed["Contents"]] == ["m/config.json"]
    part = s3.get_object(Bucket=s3_bucket, Key="m/config.json", Range="bytes=0-1")["Body"].read()
    assert part == b'{"'
