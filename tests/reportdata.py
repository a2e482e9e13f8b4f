"""A small audit with known answers for the report tests: real images (some used), a
generated batch with copies of the used ones, labels, and file names that are HTML."""

from __future__ import annotations

import csv
import io

from tests.imagegen import perturbed_copy, phantom, png

#: File names a browser would run if a page pasted them into its HTML unescaped (a
#: client's '/' would be cut off by the upload as a folder, so none is used here).
HOSTILE_REAL = "<img src=x onerror=alert(1)>.png"
HOSTILE_GENERATED = "it's <svg onload=alert(2)>.png"
USED = 9
UNUSED = 8
NOVEL = 6
COPIES = 2 * USED


def audit_images(size: int = 128) -> tuple[dict[str, bytes], dict[str, bytes], str]:
    """(real files, generated files, labels CSV): the generated batch holds two slightly
    shifted, re-lit copies of every used real image (COPIES in all) and a few novel ones."""
    used = [phantom(i, size) for i in range(USED)]
    used_names = [f"used_{i:03d}.png" for i in range(USED - 1)] + [HOSTILE_REAL]
    real = {name: png(img) for name, img in zip(used_names, used, strict=True)}
    real.update({f"unused_{i:03d}.png": png(phantom(500 + i, size)) for i in range(UNUSED)})
    generated_names = [f"generated_{i:03d}.png" for i in range(USED - 1)] + [HOSTILE_GENERATED]
    generated = {
        name: png(perturbed_copy(img, seed=i, strength=0.5))
        for i, (name, img) in enumerate(zip(generated_names, used, strict=True))
    }
    # A second copy each: the reference auditor wants more than one copy as evidence.
    generated.update(
        {f"again_{i:03d}.png": png(perturbed_copy(img, seed=100 + i)) for i, img in enumerate(used)}
    )
    generated.update({f"novel_{i:03d}.png": png(phantom(9000 + i, size)) for i in range(NOVEL)})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["real", "used", "memorized"])
    writer.writerows([name, 1, ""] for name in used_names)
    writer.writerows([f"unused_{i:03d}.png", 0, ""] for i in range(UNUSED))
    return real, generated, out.getvalue()
