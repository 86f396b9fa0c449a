"""GPU memory by product, for fit estimates before anything is scheduled.

NVIDIA's GPU feature discovery labels nodes with `nvidia.com/gpu.memory` (MiB); when a node
lacks it, the product name (`nvidia.com/gpu.product`) is looked up here.
"""

from collections.abc import Iterable

from deploy.clusters.base import NodeInfo

PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"

# GiB of memory per GPU, by the product names the device plugin reports.
KNOWN_PRODUCTS = {
    "NVIDIA-H200": 141,
    "NVIDIA-H100": 80,
    "NVIDIA-H100-80GB-HBM3": 80,
    "NVIDIA-H100-PCIe": 80,
    "NVIDIA-H800": 80,
    "NVIDIA-A100-SXM4-80GB": 80,
    "NVIDIA-A100-80GB-PCIe": 80,
    "NVIDIA-A100-SXM4-40GB": 40,
    "NVIDIA-A100-PCIE-40GB": 40,
    "NVIDIA-A800-SXM4-80GB": 80,
    "NVIDIA-L40S": 48,
    "NVIDIA-L40": 48,
    "NVIDIA-A10": 24,
    "NVIDIA-L4": 24,
    "NVIDIA-GeForce-RTX-4090": 24,
    "Tesla-V100-SXM2-32GB": 32,
    "Tesla-V100-SXM2-16GB": 16,
    "Tesla-T4": 16,
}


def gpu_memory_gib(product: str, nodes: Iterable[NodeInfo] = ()) -> float | None:
    """Memory of one GPU of this product: from a node's label if any carries it, else the table."""
    for node in nodes:
        if node.labels.get(PRODUCT_LABEL) == product and node.labels.get(MEMORY_LABEL, "").isdigit():
            return int(node.labels[MEMORY_LABEL]) / 1024
    return KNOWN_PRODUCTS.get(product)


def gpu_products(nodes: Iterable[NodeInfo]) -> dict[str, float | None]:
    """Each GPU product in the cluster with its memory (GiB), for the form's GPU type choices."""
    nodes = list(nodes)
    products = sorted({n.labels[PRODUCT_LABEL] for n in nodes if n.labels.get(PRODUCT_LABEL)})
    return {product: gpu_memory_gib(product, nodes) for product in products}
