"""models.json on the named-records helper: a file in the format every earlier Atelier wrote loads and is written
back the same, byte for byte; and what the helper now does for every named-records file (the set-aside message
kept) holds for the server lists too.
"""

from __future__ import annotations

from engines.library.installed import InstalledModel, InstalledModels
from engines.tools.servers import ToolServers

# Exactly what InstalledModels wrote before it moved onto engines.storage.named_records (json.dumps, indent 2,
# UTF-8 kept, no final newline), in the order the models came in: not sorted by id.
TODAY = """{
  "version": 1,
  "models": [
    {
      "id": "local/zeta",
      "name": "Zéta 7B (été)",
      "path": "/home/me/Modèles/zeta Q4_K_M.gguf",
      "size_bytes": 4368439584,
      "engine": "llama_cpp",
      "format": "gguf",
      "source": "import",
      "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
      "description": "",
      "added_at": 1764700000.25,
      "kind": "chat",
      "base": "llama"
    },
    {
      "id": "demo/gemma-3-270m",
      "name": "Gemma 3 270M",
      "path": "/opt/atelier/models/gemma-3-270m-Q4_K_M.gguf",
      "size_bytes": 253000000,
      "engine": "llama_cpp",
      "format": "gguf",
      "source": "demo",
      "sha256": null,
      "description": "The bundled demo model",
      "added_at": 1764600000.0,
      "kind": "chat",
      "base": null
    },
    {
      "id": "download/tiny-sd",
      "name": "Tiny SD",
      "path": "/home/me/.local/share/Atelier/models/tiny-sd",
      "size_bytes": 1200,
      "engine": "diffusers",
      "format": "diffusers",
      "source": "download",
      "sha256": null,
      "description": "",
      "added_at": 1764800000.5,
      "kind": "image",
      "base": "sd1"
    }
  ]
}"""


def test_a_model_list_in_today_s_format_loads_in_its_order_and_is_written_back_byte_for_byte(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(TODAY, encoding="utf-8")
    store = InstalledModels(path)
    models = store.all()
    assert [m.id for m in models] == ["local/zeta", "demo/gemma-3-270m", "download/tiny-sd"]
    assert models[0] == InstalledModel("local/zeta", "Zéta 7B (été)", "/home/me/Modèles/zeta Q4_K_M.gguf",
                                       4368439584, "llama_cpp", "gguf", "import",
                                       "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "",
                                       1764700000.25, "chat", "llama")
    assert store.get("download/tiny-sd").base == "sd1" and store.runnable("image") == [models[2]]
    assert store.problem is None
    last = store.remove("download/tiny-sd")
    assert [m.id for m in store.all()] == ["local/zeta", "demo/gemma-3-270m"]
    store.add(last)
    assert path.read_text(encoding="utf-8") == TODAY
    # the same model imported again replaces its record in place
    store.add(InstalledModel("local/zeta", "Zeta", "/m/zeta.gguf", 10, "llama_cpp", "gguf", "import", added_at=5.0))
    assert [m.id for m in store.all()] == ["local/zeta", "demo/gemma-3-270m", "download/tiny-sd"]
    assert store.get("local/zeta").name == "Zeta"


def test_a_set_aside_server_list_is_still_said_after_the_next_read(tmp_path):
    """The user hears it once at least: the Settings page may read the list again before it shows the message."""
    path = tmp_path / "mcp-servers.json"
    path.write_text('{"servers": [', encoding="utf-8")
    servers = ToolServers(path)
    assert servers.all() == []
    (kept,) = tmp_path.glob("mcp-servers.unreadable-*.json")
    said = servers.problem
    assert said.startswith("The list of tool (MCP) servers (mcp-servers.json) could not be read "
                           "(it is not valid JSON: ")
    assert said.endswith(f"It was kept as {kept} and a new one was started.")
    assert servers.all() == [] and servers.problem == said
