"""Reference outputs from vLLM's offline `LLM` on the same model and engine flags as the e2e server.

Run as a script (vLLM spawns processes, so it needs the `__main__` guard):
    python offline_reference.py MODEL_DIR REQUESTS_JSON OUTPUT_JSON  ->  writes one JSON list of texts
"""

from __future__ import annotations

import json
import sys


def main(model_dir: str, requests_path: str, output_path: str) -> None:
    """Generate greedily for every request and write the texts as a JSON list."""
    from vllm import LLM, SamplingParams  # noqa: PLC0415
    from vllm.lora.request import LoRARequest  # noqa: PLC0415

    requests = json.loads(open(requests_path).read())  # noqa: PTH123, SIM115
    lora = any("lora" in request for request in requests)
    llm = LLM(
        model=model_dir,
        dtype="float32",
        max_model_len=1024,
        max_num_seqs=32,
        enforce_eager=True,
        kv_cache_memory_bytes=256 * 2**20,
        **({"enable_lora": True, "max_lora_rank": 8, "max_loras": 4} if lora else {}),
    )
    texts = []
    for request in requests:
        params = SamplingParams(temperature=0, max_tokens=request["max_tokens"])
        adapter = request.get("lora")
        lora_request = LoRARequest(adapter["name"], adapter["id"], adapter["path"]) if adapter else None
        if "messages" in request:
            (output,) = llm.chat(request["messages"], params, use_tqdm=False, lora_request=lora_request)
        else:
            (output,) = llm.generate([request["prompt"]], params, use_tqdm=False, lora_request=lora_request)
        texts.append(output.outputs[0].text)
    with open(output_path, "w") as output:  # noqa: PTH123
        json.dump(texts, output)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
