# The seed's quick start, unchanged but for where the server is:
#   SBXD_URL (default http://127.0.0.1:49982) and SBXD_API_KEY.
# Run it next to a data.csv, e.g.: printf 'a,b\n1,2\n3,4\n' > data.csv
import os

import requests

BASE = os.environ.get("SBXD_URL", "http://127.0.0.1:49982")
HEADERS = {"Authorization": "Bearer " + os.environ["SBXD_API_KEY"]}

# 1. Create a sandbox
sandbox = requests.post(f"{BASE}/sandboxes", headers=HEADERS, json={
    "templateID": "code_interpreter",
    "timeout": 300
}).json()

sandbox_id = sandbox["sandboxID"]

# 2. Execute code
result = requests.post(f"{BASE}/sandboxes/{sandbox_id}/processes", headers=HEADERS, json={
    "cmd": "python3",
    "args": ["-c", "import pandas as pd; print(pd.__version__)"]
}).json()

print(result["stdout"])

# 3. Upload a file
requests.post(f"{BASE}/sandboxes/{sandbox_id}/files", headers=HEADERS,
    files={"file": ("data.csv", open("data.csv", "rb"))},
    data={"path": "/workspace/data.csv"}
)

# 4. Process the file
result = requests.post(f"{BASE}/sandboxes/{sandbox_id}/processes", headers=HEADERS, json={
    "cmd": "python3",
    "args": ["-c", """
import pandas as pd
df = pd.read_csv('/workspace/data.csv')
print(f"Rows: {len(df)}, Columns: {list(df.columns)}")
print(df.describe().to_string())
"""]
}).json()

print(result["stdout"])

# 5. Clean up
requests.delete(f"{BASE}/sandboxes/{sandbox_id}", headers=HEADERS)
