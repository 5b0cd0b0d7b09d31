"""Checking a tool call before anything runs: the tool exists, and its arguments match its JSON schema.

The model's output is only ever *parsed* (JSON), never executed; then the
arguments are validated with ``jsonschema`` against the schema the
server published. A call that fails is not sent to the server: the
problems, in words, go back to the model as the call's error result (and
are shown to the user), so it can correct itself.
"""

from __future__ import annotations

import json
from typing import Mapping

from engines.errors import EngineError, ErrorKind
from engines.tools.servers import ListedTool

MAX_PROBLEMS = 5  # enough for the model to correct a call; more would crowd its context


def parse_arguments_json(text: str) -> dict:
    """JSON text typed by a person (``atelier tools call``) as an arguments object; BAD_INPUT saying why not."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise EngineError(ErrorKind.BAD_INPUT, f"The arguments are not valid JSON ({exc}). Give a JSON object, "
                          "e.g. '{\"timezone\": \"UTC\"}'.") from None
    if not isinstance(value, dict):
        raise EngineError(ErrorKind.BAD_INPUT, f"The arguments must be a JSON object ({{...}}), not {type(value).__name__}.")
    return value


def argument_problems(schema: dict, arguments: object) -> list[str]:
    """What is wrong with ``arguments`` for ``schema``, one sentence each; empty when they are valid.

    A schema that is itself broken is reported as a problem too (the server's fault, but the call
    cannot be checked, so it is not made).
    """
    from jsonschema import exceptions, validators

    schema = schema if isinstance(schema, dict) and schema else {"type": "object"}
    try:
        validator_class = validators.validator_for(schema)
        validator_class.check_schema(schema)
    except exceptions.SchemaError as exc:
        return [f"the tool's own argument schema is invalid ({exc.message})"]
    validator = validator_class(schema)
    problems = []
    for error in sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(part) for part in error.absolute_path)
        problems.append(f"{where}: {error.message}" if where else error.message)
        if len(problems) == MAX_PROBLEMS:
            break
    return problems


def check_call(name: str, arguments: object, tools: Mapping[str, ListedTool], server: str | None = None) -> ListedTool:
    """The tool ``name`` if ``arguments`` fit it; EngineError BAD_INPUT (unknown tool, or the problems) otherwise."""
    tool = tools.get(name)
    if tool is None:
        offered = ", ".join(sorted(tools)) or "none"
        where = f" on '{server}'" if server else ""
        raise EngineError(ErrorKind.BAD_INPUT, f"There is no tool '{name}'{where}. The tools are: {offered}.")
    problems = argument_problems(tool.input_schema, arguments)
    if problems:
        raise EngineError(ErrorKind.BAD_INPUT, f"The arguments for '{name}' do not match its schema: "
                          f"{'; '.join(problems)}.")
    return tool
