# Runs inside a build step of an image built FROM tuneforge:cpu (docker/check/Containerfile): starts the board
# and the API with the embedded SmolLM2 and asks each once.
import json, time, urllib.request
def get(url, token=None, body=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=300).read())
for _ in range(600):
    try:
        print("board runs:", get("http://127.0.0.1:17860/api/runs", "t0k")); break
    except Exception: time.sleep(0.5)
for _ in range(600):
    try:
        get("http://127.0.0.1:18000/health"); break
    except Exception: time.sleep(0.5)
reply = get("http://127.0.0.1:18000/v1/chat/completions", "k3y",
            {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 12, "temperature": 0})
print("api answer:", reply["choices"][0]["message"]["content"])
