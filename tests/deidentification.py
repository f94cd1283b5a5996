"""Identifying DICOM fields planted in test files, and a search for each value in every form an
output could print it in ("Doe^Jane" as "Jane Doe", 20110131 as 2011-01-31 or 31/01/2011, ...).

The fields are those of the DICOM basic application level confidentiality profile (PS3.15
Annex E, table E.1-1) that a fundus photograph's header can carry: the patient, the study and
series, the people and the place involved, the dates and times, the device. Values are unusual
on purpose, so that a search for a name alone ("Quixwell") cannot meet an ordinary word.
"""

from __future__ import annotations

import io
import subprocess
from datetime import date
from pathlib import Path

PLANTED = {
    # the patient
    "PatientName": "Quixwell^Janelle^Marisol",
    "OtherPatientNames": "Zarbuck^Jessamy",
    "PatientID": "PID-7731-XQ",
    "IssuerOfPatientID": "ISSUER-QX-414",
    "OtherPatientIDs": "OPID-5521-ZK",
    "PatientBirthDate": "19450317",
    "PatientAge": "079Y",
    "PatientAddress": "12 Quarrington Lane, Zedtown",
    "PatientTelephoneNumbers": "555-0199-7788",
    "PatientComments": "Allergic to Zyloprene",
    "MilitaryRank": "Wingcommanderix",
    # the study, series and instance
    "StudyInstanceUID": "1.2.826.0.1.3680043.99.4242",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.99.5353",
    "SOPInstanceUID": "1.2.826.0.1.3680043.99.6464",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.99.7575",
    "AccessionNumber": "ACC-99812",
    "StudyID": "STU-44117",
    "StudyDescription": "Screening visit Vandermeer",
    "SeriesDescription": "Macula series Oxbridge",
    "StudyDate": "20110131",
    "SeriesDate": "20110201",
    "AcquisitionDate": "20110202",
    "ContentDate": "20110203",
    "StudyTime": "101532",
    "SeriesTime": "111633",
    "AcquisitionTime": "121734",
    "ContentTime": "131835",
    "AcquisitionDateTime": "20110204141936",
    # the people and the place
    "ReferringPhysicianName": "Smedwick^Robertus",
    "PerformingPhysicianName": "Brumfield^Alisande",
    "OperatorsName": "Greystoke^Oswin",
    "PhysiciansOfRecord": "Blackwater^Petronel",
    "NameOfPhysiciansReadingStudy": "Whitlock^Wendeline",
    "RequestingPhysician": "Greenhalgh^Ginevra",
    "InstitutionName": "Eye Clinic Zetaborough",
    "InstitutionAddress": "7 Retina Road, Qualmsville",
    "InstitutionalDepartmentName": "Department Kappafold",
    "StationName": "FUNDUSCAM-07X",
    "DeviceSerialNumber": "SN-88231-CAM",
}
PERSON_NAMES = {k for k in PLANTED if k.endswith(("Name", "Names", "Physician", "PhysiciansOfRecord"))} - {
    "InstitutionName",
    "InstitutionalDepartmentName",
    "StationName",
}
DATES = {k for k in PLANTED if k.endswith("Date")}
TIMES = {k for k in PLANTED if k.endswith("Time")}


def _date_forms(text: str) -> set[str]:
    day = date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    return {
        text,
        day.isoformat(),
        day.strftime("%d/%m/%Y"),
        day.strftime("%m/%d/%Y"),
        day.strftime("%d.%m.%Y"),
        day.strftime("%d-%m-%Y"),
        day.strftime("%Y/%m/%d"),
        day.strftime("%d %b %Y"),
        day.strftime("%d %B %Y"),
        day.strftime("%B %d, %Y"),
        day.strftime("%b %d, %Y"),
        f"{day.day} {day.strftime('%B %Y')}",
    }


def _time_forms(text: str) -> set[str]:
    return {text, f"{text[:2]}:{text[2:4]}:{text[4:6]}"}


def forms(keyword: str, value: str) -> set[str]:
    """Every way ``value`` of ``keyword`` could be written out, lower case (searched without case)."""
    found = {value}
    if keyword in PERSON_NAMES:
        parts = [p for p in value.split("^") if p]
        found |= set(parts)  # each name alone: "Jane Doe", "Doe, J." and "DOE" all hold one
        found.add(" ".join(reversed(parts)))
    elif keyword in DATES or keyword == "PatientBirthDate":
        found |= _date_forms(value)
    elif keyword in TIMES:
        found |= _time_forms(value)
    elif keyword == "AcquisitionDateTime":
        found |= _date_forms(value[:8]) | _time_forms(value[8:14])
        found.add(f"{value[:4]}-{value[4:6]}-{value[6:8]}T{value[8:10]}:{value[10:12]}:{value[12:14]}")
    else:
        found |= {value.replace(",", ""), value.replace("-", "")} - {""}
    return {f.lower() for f in found}


def planted_in_file(data: bytes) -> dict[str, str]:
    """The identifying values a DICOM file really holds (PLANTED's keywords, read back), and its
    file meta's instance UID (made at random)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    held = {k: str(ds.get(k)) for k in PLANTED if ds.get(k) not in (None, "")}
    held["MediaStorageSOPInstanceUID"] = str(ds.file_meta.MediaStorageSOPInstanceUID)
    return held


def readable(name: str, data: bytes) -> str:
    """What a reader of the file could see: a PDF's text and metadata, a PNG's text chunks, a
    text file's text (images are not searched byte by byte: their pixels are noise)."""
    suffix = Path(name).suffix.lower()
    if suffix == ".pdf":
        text = subprocess.run(["pdftotext", "-", "-"], input=data, capture_output=True, check=True).stdout
        info = subprocess.run(["pdfinfo", "-"], input=data, capture_output=True, check=True).stdout
        return (text + b"\n" + info).decode("utf-8", "replace")
    if suffix in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return " ".join(f"{k} {v}" for k, v in image.info.items() if isinstance(v, str | bytes))
    if suffix == ".zip":
        import zipfile

        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            inner = [readable(n, archive.read(n)) for n in archive.namelist()]
            return " ".join([*archive.namelist(), archive.comment.decode("utf-8", "replace"), *inner])
    return data.decode("utf-8", "replace")


def leaks(texts: dict[str, str], values: dict[str, str]) -> list[str]:
    """``keyword: form in where`` for each form of each value found in a text (any case, any
    white space: a PDF may break a line inside a value)."""
    flat = {where: " ".join(text.split()).lower() for where, text in texts.items()}
    squeezed = {where: "".join(text.split()) for where, text in flat.items()}
    found = []
    for keyword, value in values.items():
        for form in sorted(forms(keyword, value)):
            for where in texts:
                if form in flat[where] or "".join(form.split()) in squeezed[where]:
                    found.append(f"{keyword}: {form!r} in {where}")
    return found


def folder_texts(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): readable(p.name, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()
    }
