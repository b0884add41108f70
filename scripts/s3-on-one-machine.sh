#!/usr/bin/env bash
# The "When one machine is not enough" walk-through with no cloud: an S3 server (moto) on
# 127.0.0.1, the sample articles put there, and a Ray run reading from it and writing its run
# directory to it, against the embedded simulator. Needs: pip install -e '.[ray]' 'moto[s3]' flask flask-cors
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-5077}
python -m moto.server -H 127.0.0.1 -p "$PORT" >/dev/null 2>&1 &
MOTO=$!
trap 'kill $MOTO' EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
python - <<'PY'
import os, time
from pyarrow import fs
s3 = fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], allow_bucket_creation=True)
for _ in range(100):
    try:
        s3.create_dir("demo")
        break
    except OSError:
        time.sleep(0.1)  # the server is starting
fs.copy_files("sample_data/articles.parquet", "demo/input/articles.parquet", destination_filesystem=s3)
PY
batcher run s3://demo/input/articles.parquet -o s3://demo/runs/summaries --base-url simulator \
    --model gpt-4o-mini --prompt "Summarize in one sentence: {title}. {body}" \
    --output-format parquet --executor ray --workers 2 --rpm 3000
batcher status s3://demo/runs/summaries
