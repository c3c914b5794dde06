"""Small graph metrics of a service call graph: density, clustering, betweenness."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

__all__ = [
    "CallGraph",
    "average_clustering",
    "betweenness_centrality",
    "density",
    "interaction_complexity",
    "undirected",
]

#: A service call graph: each service maps to the services it calls.
CallGraph = Mapping[str, Iterable[str]]


def undirected(graph: CallGraph) -> dict[str, set[str]]:
    """Return the graph as undirected adjacency sets, without self-loops."""
    adjacency: dict[str, set[str]] = {}
    for node, targets in graph.items():
        adjacency.setdefault(node, set())
        for target in targets:
            if target == node:
                continue
            adjacency[node].add(target)
            adjacency.setdefault(target, set()).add(node)
    return adjacency


def density(graph: CallGraph) -> float:
    """Return edges / possible edges of the undirected graph (0 for fewer than 2 nodes)."""
    adjacency = undirected(graph)
    n = len(adjacency)
    if n < 2:
        return 0.0
    edges = sum(len(v) for v in adjacency.values()) / 2
    return edges / (n * (n - 1) / 2)


def average_clustering(graph: CallGraph) -> float:
    """Return the mean local clustering coefficient (nodes of degree < 2 count as 0)."""
    adjacency = undirected(graph)
    if not adjacency:
        return 0.0
    total = 0.0
    for neighbours in adjacency.values():
        k = len(neighbours)
        if k < 2:
            continue
        links = sum(len(adjacency[u] & neighbours) for u in neighbours) / 2
        total += links / (k * (k - 1) / 2)
    return total / len(adjacency)


def betweenness_centrality(graph: CallGraph) -> dict[str, float]:
    """Return each node's normalized betweenness centrality (Brandes' algorithm, undirected)."""
    adjacency = undirected(graph)
    nodes = list(adjacency)
    centrality = dict.fromkeys(nodes, 0.0)
    for source in nodes:
        stack: list[str] = []
        predecessors: dict[str, list[str]] = {v: [] for v in nodes}
        paths = dict.fromkeys(nodes, 0)
        paths[source] = 1
        distance = dict.fromkeys(nodes, -1)
        distance[source] = 0
        queue = deque([source])
        while queue:
            v = queue.popleft()
            stack.append(v)
            for w in adjacency[v]:
                if distance[w] < 0:
                    distance[w] = distance[v] + 1
                    queue.append(w)
                if distance[w] == distance[v] + 1:
                    paths[w] += paths[v]
                    predecessors[w].append(v)
        dependency = dict.fromkeys(nodes, 0.0)
        while stack:
            w = stack.pop()
            for v in predecessors[w]:
                dependency[v] += paths[v] / paths[w] * (1.0 + dependency[w])
            if w != source:
                centrality[w] += dependency[w]
    n = len(nodes)
    # Each undirected path was counted from both ends; normalize by (n-1)(n-2)/2 pairs.
    scale = 1.0 / ((n - 1) * (n - 2)) if n > 2 else 0.0
    return {v: c * scale for v, c in centrality.items()}


def interaction_complexity(graph: CallGraph) -> float:
    """Return the seed's interaction score: 0.4 density + 0.3 clustering + 0.3 mean betweenness."""
    centrality = betweenness_centrality(graph)
    mean_betweenness = sum(centrality.values()) / len(centrality) if centrality else 0.0
    return 0.4 * density(graph) + 0.3 * average_clustering(graph) + 0.3 * mean_betweenness
