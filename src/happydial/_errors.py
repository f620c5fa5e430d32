"""What is raised when every attempt fails, and how each error names its address.

The rules for the exception itself are CPython's ``loop.create_connection`` rules,
which aiohappyeyeballs and therefore aiohttp users already handle:

1. one error: that error;
2. several with the same message: the first of them;
3. otherwise ``OSError("Multiple exceptions: a, b, ...")``, keeping the errno when
   every error has the same one (aiohappyeyeballs added this; aiohttp relies on it).

What we add: the raised error's ``__cause__`` is an :class:`ExceptionGroup` holding
every attempt's error in start order, and each of those carries the address it
belongs to (see :func:`failed_addr_infos`). With ``all_errors=True`` that group is
raised itself, as CPython's ``create_connection(all_errors=True)`` does.
"""

from __future__ import annotations

import contextlib
import errno
import socket

from ._addresses import AddrInfoType

__all__ = [
    "aggregate_errors",
    "deadline_error",
    "failed_addr_infos",
    "format_sockaddr",
    "in_tls_stage",
    "is_deadline_error",
    "mark_tls_stage",
    "no_local_address_error",
    "tag_error",
]

_ADDR_INFO_ATTRIBUTE = "happydial_addr_info"
_DEADLINE_ATTRIBUTE = "happydial_deadline"  # the timeout= that passed
_STAGE_ATTRIBUTE = "happydial_stage"


def format_sockaddr(sockaddr: tuple[object, ...]) -> str:
    """``192.0.2.1:80`` for IPv4; ``[2001:db8::1]:80`` (``%scope`` if any) for IPv6."""
    host, port = sockaddr[0], sockaddr[1]
    if len(sockaddr) >= 4 and sockaddr[3]:
        return f"[{host}%{sockaddr[3]}]:{port}"
    if ":" in str(host):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def tag_error(error: BaseException, addr_info: AddrInfoType) -> None:
    """Attach *addr_info* to *error* as an attribute and a readable note."""
    setattr(error, _ADDR_INFO_ATTRIBUTE, addr_info)
    error.add_note(f"while connecting to {format_sockaddr(addr_info[4])}")


def mark_tls_stage(error: BaseException) -> None:
    """Mark *error* as the failure of an attempt's TLS handshake (TCP had connected)."""
    setattr(error, _STAGE_ATTRIBUTE, "tls")
    error.add_note("in the TLS handshake (TCP had connected)")


def in_tls_stage(error: BaseException) -> bool:
    """Whether *error* failed an attempt in its TLS handshake (see :func:`mark_tls_stage`)."""
    return getattr(error, _STAGE_ATTRIBUTE, None) == "tls"


def failed_addr_infos(error: BaseException) -> list[AddrInfoType]:
    """The addresses whose attempts failed, read from an error raised by happydial.

    Works on what :func:`happydial.start_connection` raises with or without
    ``all_errors``: it looks at the error itself, its ``__cause__`` group and the
    members of a group. A caller that keeps a list of addresses can drop exactly
    these and retry the rest, instead of re-running whole rounds.

    Args:
        error: An exception raised by a happydial connect call.

    Returns:
        The addr_info of every failed attempt, in attempt order (empty when the
        error does not come from a connection attempt).
    """
    if not isinstance(error, BaseException):
        raise TypeError(f"error must be an exception, got {error!r}")
    group = error if isinstance(error, BaseExceptionGroup) else error.__cause__
    members = group.exceptions if isinstance(group, BaseExceptionGroup) else (error,)
    result: list[AddrInfoType] = []
    for member in members:
        addr_info = getattr(member, _ADDR_INFO_ATTRIBUTE, None)
        if addr_info is not None:
            result.append(addr_info)
    return result


def aggregate_errors(errors: list[Exception], *, all_errors: bool) -> Exception:
    """Build the exception for a call whose every attempt failed.

    Args:
        errors: One error per failed attempt, in start order, each already tagged.
            Must not be empty.
        all_errors: Return the :class:`ExceptionGroup` itself instead of one error.

    Returns:
        The exception to raise (not raised here).
    """
    group = ExceptionGroup("all connection attempts failed", errors)
    if all_errors:
        return group
    first = errors[0]
    if len(errors) == 1 or all(str(e) == str(first) for e in errors[1:]):
        # Raise a copy: the original stays in the group with its own traceback, and
        # the raised error does not end up inside its own cause.
        result: Exception = _clone(first)
    else:
        message = "Multiple exceptions: " + ", ".join(str(e) for e in errors)
        errnos = {getattr(e, "errno", None) for e in errors}
        if len(errnos) == 1 and all(isinstance(e, OSError) for e in errors) and first.errno:  # type: ignore[attr-defined]
            # OSError(errno, msg) picks the matching subclass (ConnectionRefusedError...).
            result = OSError(first.errno, message)  # type: ignore[attr-defined]
        elif all(isinstance(e, RuntimeError) for e in errors):
            result = RuntimeError(message)
        else:
            result = OSError(message)
    result.__cause__ = group
    return result


def deadline_error(timeout: float, errors: list[Exception], what: str = "") -> TimeoutError:
    """The error for a call whose overall deadline (``timeout=``) passed.

    A :class:`TimeoutError`, whatever ``all_errors`` says: the caller asked for a
    bound on the whole call, and ``except TimeoutError`` is how one handles that.
    Its ``__cause__`` groups every attempt's (and lookup's) error, each naming its
    address, the ones still connecting when the deadline passed included.

    Args:
        timeout: The deadline, in seconds from the call's start.
        errors: What failed, in order (may be empty: nothing was tried).
        what: What was being connected to (``" to example.org:443"``), if known.
    """
    tried = sum(1 for e in errors if hasattr(e, _ADDR_INFO_ATTRIBUTE))
    counted = f"{tried} attempt{'' if tried == 1 else 's'}"
    error = TimeoutError(f"no connection{what} within {timeout:g} s ({counted})")
    setattr(error, _DEADLINE_ATTRIBUTE, timeout)
    if errors:
        error.__cause__ = ExceptionGroup("what was still pending or had failed", errors)
    return error


def is_deadline_error(error: BaseException) -> bool:
    """Whether *error* is the one :func:`deadline_error` built (not an attempt's timeout)."""
    return getattr(error, _DEADLINE_ATTRIBUTE, None) is not None


_OSERROR_FIELDS = ("errno", "strerror", "filename", "filename2")


def _clone(error: Exception) -> Exception:
    """A shallow copy of *error* that never calls its class's ``__init__``.

    ``copy.copy`` rebuilds an exception as ``cls(*error.args)``: for a class whose
    ``__init__`` takes other arguments than it passes on (``BlockedError(host,
    reason)`` calling ``super().__init__(EACCES, text)``), that raises ``TypeError``
    or, worse, builds an error with the wrong message. Here the instance is made by
    ``__new__`` and its state copied over, so the caller always gets the real error.
    """
    cls = type(error)
    clone: Exception | None = None
    for args in (error.args, ()):
        try:
            clone = cls.__new__(cls, *args)
            break
        except Exception:  # noqa: BLE001, S112 - a __new__ that refuses these args: try the next
            continue
    if clone is None:  # no __new__ that works: keep the substance in a plain error
        fallback = OSError if isinstance(error, OSError) else RuntimeError
        clone = fallback(*error.args)
    clone.args = error.args
    if isinstance(error, OSError):
        for name in _OSERROR_FIELDS:
            value = getattr(error, name)
            if value is not None:  # None set explicitly would show in str(): "x: None"
                setattr(clone, name, value)
    with contextlib.suppress(AttributeError):  # a class with __slots__ has no __dict__
        clone.__dict__.update(error.__dict__)
    clone.__notes__ = list(getattr(error, "__notes__", ()))
    clone.__cause__ = error.__cause__
    clone.__suppress_context__ = error.__suppress_context__
    return clone


def no_local_address_error(family: int) -> OSError:
    """The error of an attempt that has no local address of its family to bind to."""
    name = socket.AddressFamily(family).name
    return OSError(
        errno.EAFNOSUPPORT,
        f"no local address of family {name} in local_addr_infos to bind to",
    )
