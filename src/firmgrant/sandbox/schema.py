"""The sandbox org's objects, described the way Salesforce describes them."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


_CASE_BITS = str.maketrans({c: "1" if c.isupper() else "0" for c in _BASE62})


def case_safe_id(id15: str) -> str:
    """Salesforce's 18-character Id: three checksum characters encode the case of the 15."""
    bits = id15.translate(_CASE_BITS)
    # Each 5-character chunk's upper-case positions, read right to left, index the suffix.
    return id15 + "".join(
        _SUFFIX_CHARS[int(bits[i + 4 : i - 1 if i else None : -1], 2)] for i in (0, 5, 10)
    )


_LOW = [a + b for a in _BASE62 for b in _BASE62]  # the last two base-62 digits


@functools.lru_cache(maxsize=64)
def _high_digits(high: int) -> str:
    digits = []
    for _ in range(7):
        high, rest = divmod(high, 62)
        digits.append(_BASE62[rest])
    return "".join(reversed(digits))


def make_id(prefix: str, number: int, pod: str = "5e0") -> str:
    """A valid 18-character Id: key prefix, pod, nine base-62 digits, checksum."""
    high, low = divmod(number, 3844)
    return case_safe_id(prefix + pod + _high_digits(high) + _LOW[low])


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str  # id, string, email, picklist, textarea, datetime, date, boolean, reference, int
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    default: Any = None
    label: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label or self.name.removesuffix("__c").replace("_", " "),
            "type": self.type,
            "length": self.length,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "filterable": self.type != "textarea",
            "sortable": self.type != "textarea",
            "custom": self.name.endswith("__c"),
            "defaultedOnCreate": self.default is not None or not self.createable,
            "restrictedPicklist": self.restricted,
            "picklistValues": [
                {"active": True, "defaultValue": False, "label": v, "value": v}
                for v in self.picklist
            ],
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
        }


_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "datetime": "xsd:dateTime",
    "date": "xsd:date",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
}

_SYSTEM = (
    FieldDef("Id", "id", 18, nillable=False, createable=False, updateable=False, label="Record ID"),
    FieldDef(
        "IsDeleted",
        "boolean",
        nillable=False,
        createable=False,
        updateable=False,
        default=False,
        label="Deleted",
    ),
    FieldDef(
        "CreatedDate",
        "datetime",
        nillable=False,
        createable=False,
        updateable=False,
        label="Created Date",
    ),
    FieldDef(
        "LastModifiedDate",
        "datetime",
        nillable=False,
        createable=False,
        updateable=False,
        label="Last Modified Date",
    ),
    FieldDef(
        "SystemModstamp",
        "datetime",
        nillable=False,
        createable=False,
        updateable=False,
        label="System Modstamp",
    ),
)


@dataclass(frozen=True)
class ObjectDef:
    name: str
    key_prefix: str
    label: str
    fields: tuple[FieldDef, ...]
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    # A data load may set CreatedDate/LastModifiedDate ("Set Audit Fields upon Record
    # Creation"); Salesforce's own records (the audit trail, sessions) carry the real time.
    audit_fields_settable: bool = True
    by_lower: dict[str, FieldDef] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_lower", {f.name.lower(): f for f in self.fields})

    def field(self, name: str) -> FieldDef | None:
        return self.by_lower.get(name.lower())

    def summary(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label + "s",
            "keyPrefix": self.key_prefix,
            "custom": self.name.endswith("__c"),
            "queryable": True,
            "retrieveable": True,
            "searchable": False,
            "createable": self.createable,
            "updateable": self.updateable,
            "deletable": self.deletable,
            "undeletable": self.deletable,
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }

    def describe(self, version: str) -> dict[str, Any]:
        return {**self.summary(version), "fields": [f.describe() for f in self.fields]}


DURATIONS = ("1 Day", "3 Days", "1 Week", "1 Month", "1 Year")

GRANT = ObjectDef(
    "Login_Access_Grant__c",
    "a0B",
    "Login Access Grant",
    _SYSTEM
    + (
        FieldDef("Org_Id__c", "string", 18, nillable=False, label="Org ID"),
        FieldDef("Org_Name__c", "string", 255),
        FieldDef("Grantor_Id__c", "string", 18, label="Grantor ID"),
        FieldDef("Grantor_Username__c", "string", 255),
        FieldDef("Grantor_Email__c", "email", 255),
        FieldDef("Grantee__c", "string", 255, nillable=False),
        FieldDef("Access_Duration__c", "picklist", 255, picklist=DURATIONS),
        FieldDef("Granted_At__c", "datetime"),
        FieldDef("Expires_At__c", "datetime"),
        FieldDef(
            "Granted_Via_Login_As__c",
            "boolean",
            nillable=False,
            default=False,
            label="Granted via Login-As",
        ),
        FieldDef("Login_As_User__c", "string", 255, label="Login-As User"),
        FieldDef(
            "Status__c",
            "picklist",
            255,
            picklist=("Active", "Revoked", "Expired"),
            restricted=True,
            default="Active",
        ),
        FieldDef("Revoked_At__c", "datetime"),
        FieldDef("Revoke_Reason__c", "textarea", 1000),
    ),
)

AUDIT = ObjectDef(
    "SetupAuditTrail",
    "0Ym",
    "Setup Audit Trail",
    (_SYSTEM[0], _SYSTEM[2])
    + (
        FieldDef("Action", "string", 255, createable=False, updateable=False),
        FieldDef("Section", "string", 255, createable=False, updateable=False),
        FieldDef("CreatedById", "reference", 18, createable=False, updateable=False),
        # The CreatedBy relationship's fields, as SOQL names them (answered nested).
        FieldDef("CreatedBy.Username", "string", 80, createable=False, updateable=False),
        FieldDef("CreatedBy.Email", "email", 128, createable=False, updateable=False),
        FieldDef("CreatedBy.LocaleSidKey", "picklist", 40, createable=False, updateable=False),
        FieldDef("CreatedBy.TimeZoneSidKey", "picklist", 40, createable=False, updateable=False),
        FieldDef("CreatedBy.LanguageLocaleKey", "picklist", 40, createable=False, updateable=False),
        FieldDef("CreatedByContext", "string", 255, createable=False, updateable=False),
        FieldDef("DelegateUser", "string", 255, createable=False, updateable=False),
        FieldDef("Display", "string", 1000, createable=False, updateable=False),
        FieldDef("ResponsibleNamespacePrefix", "string", 255, createable=False, updateable=False),
    ),
    createable=False,
    updateable=False,
    deletable=False,
    audit_fields_settable=False,
)

AUTH_SESSION = ObjectDef(
    "AuthSession",
    "0Ak",
    "Auth Session",
    (_SYSTEM[0], _SYSTEM[2], _SYSTEM[3])
    + (
        FieldDef("UsersId", "reference", 18, createable=False, updateable=False),
        FieldDef(
            "SessionType",
            "picklist",
            255,
            createable=False,
            updateable=False,
            picklist=("UI", "API", "SubstituteUser", "Oauth2"),
        ),
        FieldDef(
            "LoginType",
            "picklist",
            255,
            createable=False,
            updateable=False,
            picklist=("Application", "Other Apex API"),
        ),
        FieldDef("SourceIp", "string", 39, createable=False, updateable=False),
        FieldDef("NumSecondsValid", "int", createable=False, updateable=False),
        FieldDef(
            "UserType", "picklist", 255, createable=False, updateable=False, picklist=("Standard",)
        ),
        FieldDef(
            "SessionSecurityLevel",
            "picklist",
            255,
            createable=False,
            updateable=False,
            picklist=("STANDARD", "HIGH_ASSURANCE"),
        ),
    ),
    createable=False,
    updateable=False,
    audit_fields_settable=False,
)

ORGANIZATION = ObjectDef(
    "Organization",
    "00D",
    "Organization",
    (
        _SYSTEM[0],
        FieldDef("Name", "string", 80, createable=False, updateable=False),
        FieldDef("TimeZoneSidKey", "picklist", 40, createable=False, updateable=False),
        FieldDef("DefaultLocaleSidKey", "picklist", 40, createable=False, updateable=False),
        FieldDef("LanguageLocaleKey", "picklist", 40, createable=False, updateable=False),
    ),
    createable=False,
    updateable=False,
    deletable=False,
    audit_fields_settable=False,
)

USER = ObjectDef(
    "User",
    "005",
    "User",
    (
        _SYSTEM[0],
        FieldDef("Username", "string", 80, createable=False, updateable=False),
        FieldDef("TimeZoneSidKey", "picklist", 40, createable=False, updateable=False),
        FieldDef("LocaleSidKey", "picklist", 40, createable=False, updateable=False),
        FieldDef("LanguageLocaleKey", "picklist", 40, createable=False, updateable=False),
    ),
    createable=False,
    updateable=False,
    deletable=False,
    audit_fields_settable=False,
)

OBJECTS = {obj.name.lower(): obj for obj in (GRANT, AUDIT, AUTH_SESSION, ORGANIZATION, USER)}
