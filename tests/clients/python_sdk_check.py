"""The official `openai` Python package, unchanged, against a running Tokaroo.

Run by tests/it/sdk_clients.rs with TOKAROO_BASE_URL (".../v1") and TOKAROO_KEY set. Prints
one "ok <check>" line per check; any failure raises, which exits non-zero with a traceback.
"""

import json
import os

import openai

BASE_URL = os.environ["TOKAROO_BASE_URL"]
KEY = os.environ["TOKAROO_KEY"]
client = openai.OpenAI(base_url=BASE_URL, api_key=KEY, max_retries=0)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def check(name):
    def run(fn):
        fn()
        print(f"ok {name}", flush=True)
        return fn

    return run


@check("plain")
def _():
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Say hello"}]
    )
    completion = raw.parse()
    assert completion.model == "auto", completion.model
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content, completion
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens > 0
    assert float(raw.headers["x-tokaroo-cost"]) >= 0
    assert raw.headers["x-tokaroo-cache"] == "miss"


@check("stream")
def _():
    stream = client.chat.completions.create(
        model="fast",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.model == "fast"
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text, "streamed text"
    assert finish == "stop", finish
    assert usage is not None and usage.completion_tokens > 0


@check("tool round trip")
def _():
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="auto", messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})})
    second = client.chat.completions.create(model="auto", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content, second


@check("streamed tool call")
def _():
    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        stream=True,
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        for call in chunk.choices[0].delta.tool_calls or []:
            name += call.function.name or ""
            arguments += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather", name
    assert isinstance(json.loads(arguments), dict), arguments
    assert finish == "tool_calls", finish


@check("embeddings")
def _():
    # The SDK asks for base64 unless told otherwise, and decodes it.
    result = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 1536 for d in result.data)
    assert result.usage.prompt_tokens > 0


@check("images")
def _():
    import base64
    import urllib.request

    raw = client.images.with_raw_response.generate(
        model="auto", prompt="A lighthouse at dusk", size="1024x1024", response_format="b64_json", n=2
    )
    result = raw.parse()
    assert len(result.data) == 2, result
    assert base64.b64decode(result.data[0].b64_json)[:8] == b"\x89PNG\r\n\x1a\n"
    assert float(raw.headers["x-tokaroo-cost"]) > 0
    by_url = client.images.generate(model="max", prompt="A lighthouse at dusk", size="1792x1024", quality="hd")
    with urllib.request.urlopen(by_url.data[0].url) as answer:
        assert answer.headers["content-type"] == "image/png"
        assert answer.read()[:4] == b"\x89PNG"
    try:
        client.images.generate(prompt="x", size="999x999")
        raise AssertionError("size 999x999 was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "size" in str(e.message), e


@check("speech")
def _():
    raw = client.audio.speech.with_raw_response.create(model="auto", voice="nova", input="Hello, welcome to Tokaroo!")
    assert raw.headers["content-type"] == "audio/mpeg", raw.headers
    assert len(raw.content) > 0
    assert float(raw.headers["x-tokaroo-cost"]) > 0
    wav = client.audio.speech.create(model="fast", voice="alloy", input="Hi", response_format="wav")
    assert wav.content[:4] == b"RIFF"


@check("transcription")
def _():
    import io

    audio = io.BytesIO(b"\x00" * 32000)
    audio.name = "call.mp3"
    result = client.audio.transcriptions.create(model="auto", file=audio, language="en")
    assert result.text.startswith("[simulated]"), result
    srt = client.audio.transcriptions.create(model="auto", file=("call.mp3", b"\x00" * 32000), response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> "), srt


@check("models")
def _():
    ids = {m.id for m in client.models.list()}
    assert {"auto", "fast", "max"} <= ids, ids


@check("errors")
def _():
    try:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}], temperature=5)
        raise AssertionError("temperature 5 was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "temperature" in str(e.message), e
    bad_key = openai.OpenAI(base_url=BASE_URL, api_key="tok_not_a_real_key", max_retries=0)
    try:
        bad_key.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e


@check("knowledge context")
def _():
    # A memory written through Tokaroo's own route, then a chat that opts in to context with
    # the extension field, passed through the SDK's extra_body.
    import urllib.request

    note = urllib.request.Request(
        BASE_URL + "/memory/notes",
        data=json.dumps({"content": "The deploy freeze starts on December 20."}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(note).read()
    completion = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "When does the deploy freeze start?"}],
        extra_body={"tokaroo": {"context": {"max_tokens": 200}}},
    )
    context = completion.to_dict()["tokaroo"]["context"]
    assert len(context["memories"]) == 1, context
    assert context["used_tokens"] <= 200, context
    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "When does the deploy freeze start?"}],
        extra_body={"tokaroo": {"context": True}},
        stream=True,
    )
    chunks = list(stream)
    # The context rides on the first chunk, which has a choice like any other.
    assert chunks[0].choices and chunks[0].to_dict()["x_tokaroo"]["context"]["memories"], chunks[0]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
