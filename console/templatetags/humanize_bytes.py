from django import template

register = template.Library()


@register.filter(name="bytes")
def human_bytes(value: float | int | None) -> str:
    """1536 -> '1.5 KiB'; binary units, like the quantities users type (Gi, Mi)."""
    amount = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"
