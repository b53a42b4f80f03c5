"""Kubernetes-style Status responses."""

from __future__ import annotations

_REASON_CODES = {"BadRequest": 400, "Unauthorized": 401, "Forbidden": 403, "NotFound": 404,
                 "MethodNotAllowed": 405, "NotAcceptable": 406, "AlreadyExists": 409,
                 "Conflict": 409, "Expired": 410, "Gone": 410, "UnsupportedMediaType": 415,
                 "Invalid": 422, "InternalError": 500}


class ApiError(Exception):
    """An API failure answered as a `kind: Status` body with `code` and `reason`."""

    def __init__(self, reason: str, message: str, details: dict | None = None,
                 code: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details
        self.code = code or _REASON_CODES.get(reason, 500)

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def not_found(rt, name: str) -> ApiError:
    return ApiError("NotFound", f'{rt.qualified} "{name}" not found',
                    {"name": name, "group": rt.group, "kind": rt.plural})


def success(rt, name: str, uid: str | None = None) -> dict:
    details = {"name": name, "group": rt.group, "kind": rt.plural}
    if uid:
        details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}
