"""JSON schemas as llama.cpp grammars: a reply that must follow a schema.

The schema becomes a GBNF grammar through llama-cpp-python's port of
llama.cpp's own converter (``json_schema_to_gbnf``, the one behind
``LlamaGrammar.from_json_schema`` and llama.cpp's server), and llama.cpp
then masks every token the grammar does not allow, so the reply is valid
by construction rather than checked afterwards.

Three things are checked before a token is generated, each refused in words
(EngineError BAD_INPUT) instead of failing later:

- the converter's own refusals (an unknown type, a ``$ref`` it cannot
  resolve, a pattern it cannot read) with its reason; a ``$ref`` to a URL
  is refused before it (the engine never fetches anything);
- keywords the converter silently ignores (``minimum``, ``uniqueItems``,
  ``not``...) and bounds that contradict each other (``minItems`` above
  ``maxItems``): the reply would break the schema it was promised to
  follow (Gemma wrote ``"year": 4`` under ``"minimum": 1800``), so they are
  refused by name, as OpenAI's strict structured outputs refuse the
  keywords they cannot enforce;
- a grammar llama.cpp itself cannot parse: adding it to a sampler chain
  unchecked would hand llama.cpp a null sampler.
"""

from __future__ import annotations

import json
import re

from engines.errors import EngineError, ErrorKind

# Pairs of (lower, upper) keywords that make a schema unsatisfiable when lower > upper.
_BOUND_PAIRS = (("minItems", "maxItems"), ("minLength", "maxLength"))
# Keywords that constrain values but that llama-cpp-python's converter drops without a word.
UNENFORCED = (
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems",
    "minProperties", "maxProperties", "not", "if", "then", "else", "contains", "minContains", "maxContains",
    "patternProperties", "propertyNames", "dependentRequired", "dependentSchemas", "unevaluatedProperties",
    "unevaluatedItems",
)
_LOOSE_CHAR = r'char ::= [^"\\] | "\\" ('
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" ('
# Keywords whose values are data (or names), not schemas to look inside.
_DATA = ("enum", "const", "default", "examples", "required")
_SHAPE_DROPPED = ("title", "examples", "$schema", "$id")  # metadata a grammar never needs
MAX_SCHEMA_BYTES = 64 * 1024  # a schema is a few KB; this keeps a hostile one from costing the engine seconds


def check_schema(schema: dict) -> str:
    """The GBNF grammar of ``schema``, or EngineError BAD_INPUT saying why it cannot constrain a reply.

    Every check short of the model's vocabulary (size, remote references, keywords a grammar cannot
    enforce, llama.cpp's converter): the GUI checks a typed schema with it before a model is loaded.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    text = json.dumps(schema)
    if len(text) > MAX_SCHEMA_BYTES:
        raise _bad(f"it is {len(text):,} bytes; at most {MAX_SCHEMA_BYTES:,} are accepted")
    problem = _schema_problem(schema, "")
    if problem:
        raise _bad(problem)
    try:
        gbnf = json_schema_to_gbnf(text)
    except RecursionError:
        raise _bad("it nests too deeply") from None
    except Exception as exc:  # the converter raises AssertionError, ValueError, KeyError... with its reason
        raise _bad(str(exc) or type(exc).__name__) from None
    return _no_control_characters_in_strings(gbnf)


def grammar_for_schema(schema: dict, llm, wrap: tuple[str, str] | None = None):
    """A ``LlamaGrammar`` for ``schema``, checked by llama.cpp against this model's vocabulary.

    ``wrap`` (two GBNF fragments, e.g. ``('"<tool_call>\\n" ', ' "\\n</tool_call>"')``) puts literal text
    before and after the JSON value: a tool call in a chat template's own syntax.
    """
    from llama_cpp.llama_grammar import LlamaGrammar

    gbnf = check_schema(schema)
    if wrap is not None and any(wrap):
        gbnf = re.sub(r"^root ::=", "wrapped-value ::=", gbnf, count=1, flags=re.M)
        gbnf += f"\nroot ::= {wrap[0]}wrapped-value{wrap[1]}\n"
    _check_llama_parses(gbnf, llm)
    return LlamaGrammar.from_string(gbnf)


def shape_only(schema: dict | None) -> dict:
    """A schema without what a grammar cannot enforce, for constraining a tool call's arguments.

    Bounds such as ``minimum`` cannot be enforced by a grammar, so :func:`check_schema` refuses
    schemas that carry them. For a tool's arguments the grammar only needs the shape; the full
    schema still decides (engines.tools.arguments, with jsonschema) whether the call is made.
    """

    def strip(node, in_properties=False):
        if isinstance(node, list):
            return [strip(item) for item in node]
        if not isinstance(node, dict):
            return node
        if in_properties:
            return {name: strip(value) for name, value in node.items()}
        out = {}
        for key, value in node.items():
            if key in UNENFORCED or key in _SHAPE_DROPPED or key == "format":
                continue
            if key in ("minLength", "maxLength") and "pattern" in node:
                continue
            if key in ("enum", "const", "default", "required"):
                out[key] = value
            else:
                out[key] = strip(value, in_properties=key in ("properties", "$defs", "definitions"))
        return out

    cleaned = strip(schema if isinstance(schema, dict) and schema else {"type": "object"})
    cleaned.setdefault("type", "object")
    return cleaned


def _no_control_characters_in_strings(gbnf: str) -> str:
    """JSON strings may not hold raw control characters; llama-cpp-python's ``char`` rule allows them.

    Gemma wrote a raw line break inside a title, which no JSON parser reads.
    llama.cpp's own converter has since excluded U+0000..U+001F and DEL from
    ``char``; this is its rule, put in place of the older one.
    """
    return gbnf.replace(_LOOSE_CHAR, _JSON_CHAR)


def _check_llama_parses(gbnf: str, llm) -> None:
    import llama_cpp

    from engines.llama.native_log import NATIVE_LOG

    NATIVE_LOG.clear()
    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode("utf-8"), b"root")
    if not sampler:
        reason = NATIVE_LOG.last_error() or "its grammar does not parse"
        raise _bad(f"llama.cpp could not use the grammar built from it ({reason})")
    llama_cpp.llama_sampler_free(sampler)


def _schema_problem(node, where: str) -> str | None:
    """The first remote reference, unenforced keyword or pair of bounds no value can meet, with its JSON pointer."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            found = _schema_problem(item, f"{where}/{index}")
            if found:
                return found
        return None
    if not isinstance(node, dict):
        return None
    if _is_property_map(where):  # names of properties, each with its schema
        return next((found for name, value in node.items() if (found := _schema_problem(value, f"{where}/{name}"))), None)
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        return f"the $ref at {where or '/'} names another document ({ref}), which is never fetched; put that schema under $defs"
    for keyword in UNENFORCED:
        if keyword in node:
            return (f"llama.cpp's grammar cannot enforce '{keyword}' (at {where or '/'}); "
                    "leave it out and check that rule after the reply")
    if "pattern" in node and ("minLength" in node or "maxLength" in node):
        keyword = "minLength" if "minLength" in node else "maxLength"
        return (f"llama.cpp's grammar cannot enforce '{keyword}' together with 'pattern' (at {where or '/'}); "
                "put the length into the pattern")
    for low, high in _BOUND_PAIRS:
        lower, upper = node.get(low), node.get(high)
        if _is_number(lower) and _is_number(upper) and lower > upper:
            return f"{low} {lower} is more than {high} {upper} at {where or '/'}"
    for key, value in node.items():
        if isinstance(value, (dict, list)) and key not in _DATA:
            found = _schema_problem(value, f"{where}/{key}")
            if found:
                return found
    return None


def _is_property_map(where: str) -> bool:
    """Whether ``where`` is a map of names to schemas (``properties``, ``$defs``): its keys are names, not keywords."""
    return where.rsplit("/", 1)[-1] in ("properties", "$defs", "definitions")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad(reason: str) -> EngineError:
    return EngineError(ErrorKind.BAD_INPUT, f"The JSON schema cannot be used to constrain the reply: {reason}.")
