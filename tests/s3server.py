"""A real S3 protocol server on 127.0.0.1 for tests: moto's threaded server.

moto implements ``If-Match`` and ``If-None-Match`` on PutObject, which is what the lake's
commits rely on. Nothing leaves the machine. It accepts any key unless a test asks it to
check signatures (``checking_signatures``): then only an IAM user's key signs right.
"""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def env(self) -> dict[str, str]:
        """The standard AWS variables a user would set for an S3-compatible service."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def new_bucket(self) -> str:
        import boto3

        name = f"lake-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return name

    @contextlib.contextmanager
    def checking_signatures(self) -> Iterator[dict[str, str]]:
        """Within the block the server checks every request's signature (moto's IAM
        checks, off by default so other tests pay nothing): the AWS variables of a key that
        signs right, an IAM user's allowed ``s3:*``. Process-wide, as moto's setting is."""
        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )
        user = f"lake-writer-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        allow_s3 = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(allow_s3))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self._no_auth_actions("0")  # from the next request on, every one is checked
        try:
            yield {
                **self.env(),
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
        finally:
            self._no_auth_actions("inf")

    def _no_auth_actions(self, count: str) -> None:
        # moto's own switch: requests served before it checks signatures (inf: never).
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=count.encode(),
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
