"""De-identification of derived DICOM: DICOM PS3.15 Annex E Basic Application Level Confidentiality
Profile, with the Retain Patient Characteristics Option.

What :class:`Deidentifier` does to a dataset (recursively, sequences included):

- removes every private element (the profile's default for private attributes);
- empties the identifying type-2 attributes (PatientName, StudyDate, AccessionNumber, ...), and
  replaces PatientID by a keyed hash (:func:`medbench.utils.files.hash_id`), so that derived
  files of one patient stay linkable without revealing the ID;
- removes the other identifying attributes of Table E.1-1 (birth date, other IDs, addresses,
  institution, physicians, operators, station, device serial number, free-text descriptions and
  comments, request attributes) and every remaining person name, date, time and date-time;
- remaps every instance UID (study, series, SOP, frame of reference, referenced SOP instances) to
  ``2.25.<keyed HMAC>`` of the source UID: the same source UID gives the same new UID in every file
  of a run (and of any run with the same project secret), so series and references stay intact.
  Standard UIDs (SOP classes, transfer syntaxes, coding schemes) are kept;
- sets PatientIdentityRemoved = YES, DeidentificationMethod and its code sequence (113100 Basic
  Profile, 113108 Retain Patient Characteristics) and LongitudinalTemporalInformationModified =
  REMOVED.

Kept on purpose: PatientSex, PatientAge, PatientSize, PatientWeight (the option's characteristics:
subgroup and confounder audits need them), Manufacturer and model (the vendor is what harmonization
acts on), acquisition and geometry parameters, the pixels, and medbench's own DerivationDescription
(generated text, no source free text). Burned-in text in the pixels is not checked.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from medbench.utils.files import hash_id, project_secret

METHOD = "PS3.15 E.1 Basic Profile, Retain Patient Chars (medbench)"  # LO: at most 64 characters
METHOD_CODES = (("113100", "Basic Application Confidentiality Profile"),
                ("113108", "Retain Patient Characteristics Option"))

#: Type-2 identifying attributes: emptied (action Z), so the IODs stay valid.
EMPTY = (
    "PatientName", "PatientBirthDate", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDate", "StudyTime", "ContentDate", "ContentTime",
)
#: Identifying attributes removed (action X; Table E.1-1); person names, dates and times not listed
#: here or in EMPTY are removed too.
REMOVE = (
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientBirthTime", "PatientAddress", "PatientTelephoneNumbers",
    "PatientTelecomInformation", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "MedicalRecordLocator", "MilitaryRank", "BranchOfService", "CountryOfResidence", "RegionOfResidence",
    "EthnicGroup", "Occupation", "PatientReligiousPreference", "AdditionalPatientHistory",
    "PatientComments", "PatientInsurancePlanCodeSequence", "PatientPrimaryLanguageCodeSequence",
    "MedicalAlerts", "Allergies", "PregnancyStatus", "SmokingStatus", "LastMenstrualDate",
    "ReferencedPatientSequence", "ReferencedPatientPhotoSequence", "ResponsiblePerson",
    "ResponsibleOrganization", "PatientState", "AdmissionID", "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence", "InstitutionName", "InstitutionAddress", "InstitutionCodeSequence",
    "InstitutionalDepartmentName", "InstitutionalDepartmentTypeCodeSequence", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "ReferringPhysicianIdentificationSequence",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "OperatorsName", "OperatorIdentificationSequence",
    "RequestingPhysician", "RequestingService", "StationName", "DeviceSerialNumber", "DeviceUID",
    "PlateID", "CassetteID", "GantryID", "DetectorID", "StudyDescription", "SeriesDescription",
    "ImageComments", "StudyComments", "ProtocolName", "PerformedProcedureStepID",
    "PerformedProcedureStepDescription", "PerformedLocation", "PerformedStationName",
    "RequestAttributesSequence", "RequestedProcedureID", "RequestedProcedureDescription",
    "ScheduledProcedureStepID", "ReasonForStudy", "RequestedContrastAgent", "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence", "OriginalAttributesSequence", "EncryptedAttributesSequence",
    "ModifiedAttributesSequence", "ContributingEquipmentSequence", "DigitalSignaturesSequence",
    "MACParametersSequence", "AcquisitionComments", "DerivationCodeSequence", "TextComments",
    "TextString", "Overlays", "CurveData", "ConsultingPhysicianName", "EvaluatorName",
    "HumanPerformerName", "VerifyingObserverName", "PersonName", "PersonAddress",
    "PersonTelephoneNumbers", "InterpretationAuthor", "InterpretationRecorder", "InterpretationApproverSequence",
    "ScheduledPerformingPhysicianName", "ClinicalTrialSponsorName", "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID", "ClinicalTrialProtocolID",
    "TimezoneOffsetFromUTC", "AcquisitionDeviceProcessingDescription", "DischargeDiagnosisDescription",
    "FrameComments", "IconImageSequence",
)
#: The characteristics the Retain Patient Characteristics Option keeps.
RETAIN = ("PatientSex", "PatientAge", "PatientSize", "PatientWeight")
#: UIDs that name a class or syntax, not an instance: never remapped.
_KEEP_UIDS = ("SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID", "MediaStorageSOPClassUID",
              "ImplementationClassUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID",
              "ReferencedSOPClassUIDInFile", "ReferencedTransferSyntaxUIDInFile")
_TIME_VRS = ("DA", "DT", "TM")


class Deidentifier:
    """Applies the profile to datasets; UIDs are remapped consistently (one object per run)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = project_secret() if secret is None else secret
        self.uid_map: dict[str, str] = {}

    def uid(self, old: str) -> str:
        """``2.25.<decimal of a keyed 128-bit HMAC of old>``: stable, and unrelated to ``old`` without the key."""
        old = str(old).strip()
        if old not in self.uid_map:
            digest = hmac.new(self._secret, f"uid:{old}".encode(), hashlib.sha256).digest()[:16]
            self.uid_map[old] = f"2.25.{int.from_bytes(digest, 'big')}"
        return self.uid_map[old]

    def __call__(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place (and its file meta) and return it."""
        pid = str(ds.get("PatientID", "") or "")
        ds.remove_private_tags()
        self._walk(ds, top=True)
        ds.PatientID = hash_id(pid, salt="patient") if pid else ""
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD
        codes = []
        for value, meaning in METHOD_CODES:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = codes
        ds.LongitudinalTemporalInformationModified = "REMOVED"
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds

    def _walk(self, ds: Dataset, *, top: bool) -> None:
        for elem in list(ds):
            kw = elem.keyword
            if kw in RETAIN:
                continue
            if top and kw in EMPTY:
                elem.value = ""
            elif kw in REMOVE or elem.VR in ("PN", *_TIME_VRS) or (elem.tag.group & 0xFF00) in (0x5000, 0x6000):
                del ds[elem.tag]  # repeating groups: curves (50xx) and overlays (60xx) may hold text
            elif elem.VR == "SQ":
                for item in elem.value:
                    self._walk(item, top=False)
            elif elem.VR == "UI" and kw not in _KEEP_UIDS and elem.value:
                elem.value = _remap(elem.value, self.uid)


def _remap(value: Any, fn: Any) -> Any:
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
        return [v if _standard(v) else fn(v) for v in value]
    return value if _standard(value) else fn(value)


def _standard(uid: object) -> bool:
    """A UID from the DICOM dictionary (SOP class, transfer syntax, ...), not an instance UID."""
    return UID(str(uid)).name != str(uid)
