"""A local stand-in for the few Hugging Face Hub API calls a push makes (create repo, preupload,
commit), so push paths are tested without the real Hub; it records what arrives."""

from __future__ import annotations

import base64
import json

from standin import JSONHandler, StandIn

TOKEN = "hf_standinToken"


class HubStandIn(StandIn):
    def __init__(self):
        self.files: dict[str, dict[str, bytes]] = {}  # repo -> path -> content
        self.requests: list[str] = []
        self.private: dict[str, bool] = {}
        super().__init__()

    def _handler(self):
        hub = self

        class Handler(JSONHandler):
            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._reply(401, {"error": "Invalid credentials in Authorization header"})
                    return False
                return True

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self):
                hub.requests.append(f"GET {self.path}")
                if self.path.startswith("/api/whoami"):
                    if self._authorized():
                        self._reply(
                            200,
                            {"name": "tester", "type": "user", "auth": {"accessToken": {"role": "write"}}},
                        )
                    return
                parts = self.path.split("?")[0].split("/")
                if len(parts) >= 5 and parts[1] == "api" and parts[2] == "models":
                    repo = f"{parts[3]}/{parts[4]}"
                    if repo in hub.files:
                        siblings = [{"rfilename": p} for p in hub.files[repo]]
                        return self._reply(
                            200,
                            {"id": repo, "sha": "0" * 40, "siblings": siblings, "private": hub.private[repo]},
                        )
                self._reply(404, {"error": "Repository not found"})

            def do_POST(self):
                hub.requests.append(f"POST {self.path}")
                body = self._body()
                if not self.path.startswith("/api/validate-yaml") and not self._authorized():
                    return
                path = self.path.split("?")[0]
                if path == "/api/validate-yaml":  # model card metadata check
                    return self._reply(200, {})
                if path == "/api/repos/create":
                    payload = json.loads(body)
                    repo = f"{payload.get('organization') or 'tester'}/{payload['name']}"
                    hub.files.setdefault(repo, {})
                    hub.private[repo] = bool(payload.get("private")) or payload.get("visibility") == "private"
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo, "id": repo})
                parts = path.split("/")
                if len(parts) >= 7 and parts[2] == "models":
                    repo, action = f"{parts[3]}/{parts[4]}", parts[5]
                    if repo not in hub.files:
                        return self._reply(404, {"error": "Repository not found"})
                    if action == "preupload":
                        files = json.loads(body)["files"]
                        return self._reply(
                            200,
                            {
                                "files": [
                                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                    for f in files
                                ]
                            },
                        )
                    if action == "commit":
                        for line in body.decode().splitlines():
                            item = json.loads(line)
                            if item["key"] == "file":
                                value = item["value"]
                                hub.files[repo][value["path"]] = base64.b64decode(value["content"])
                        return self._reply(
                            200, {"commitUrl": f"{hub.url}/{repo}/commit/{'1' * 40}", "commitOid": "1" * 40}
                        )
                self._reply(404, {"error": f"not served by the stand-in: {self.path}"})

        return Handler
