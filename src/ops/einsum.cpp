// einsum as a composition of differentiable primitives, so it has no rules of its own: each
// operand first loses its repeated labels (a diagonal is a strided slice of the two axes merged:
// elements 0, n+1, 2(n+1), ...) and the labels no one else needs (a sum); then operands are
// contracted two at a time, each pair as one matmul [batch, M, K] @ [batch, K, N] after a
// permute and a reshape; the last one is permuted to the output's order. The pairwise order
// comes from einsum_path's cost model.
#include "chainrule/ops/einsum.h"

#include <algorithm>
#include <limits>
#include <fmt/format.h>

#include "chainrule/ops/indexing.h"

namespace chainrule {

namespace {

// Labels: A-Z are 0..25 and a-z 26..51 (NumPy's implicit output sorts them by character code);
// the broadcast axes of "..." are 52, 53, ..., right-aligned across the operands.
constexpr int kEllipsisBase = 52;
using Labels = std::vector<int>;

char label_char(int l) { return l < 26 ? static_cast<char>('A' + l) : static_cast<char>('a' + l - 26); }
std::string label_name(int l) { return l >= kEllipsisBase ? "..." : std::string(1, label_char(l)); }

struct Term {
  Labels letters;         // in order, with kEllipsisBase - 1 standing for where "..." was
  bool ellipsis = false;
};
constexpr int kDots = -1;

Term parse_term(std::string_view s, std::string_view all) {
  Term t;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == ' ') continue;
    if (c == '.') {
      if (s.substr(i, 3) != "..." || t.ellipsis)
        throw ShapeError(fmt::format("einsum: bad '.' in subscripts '{}' (only one '...' per operand)", all));
      t.ellipsis = true;
      t.letters.push_back(kDots);
      i += 2;
    } else if (c >= 'A' && c <= 'Z') {
      t.letters.push_back(c - 'A');
    } else if (c >= 'a' && c <= 'z') {
      t.letters.push_back(26 + c - 'a');
    } else {
      throw ShapeError(fmt::format("einsum: invalid character '{}' in subscripts '{}'", c, all));
    }
  }
  return t;
}

// The subscripts resolved against the operands' shapes.
struct Spec {
  std::vector<Labels> inputs;  // one label per axis
  Labels output;
  std::vector<std::int64_t> size;  // per label (-1: unused)
};

Spec parse(std::string_view subscripts, const std::vector<Shape>& shapes) {
  const auto arrow = subscripts.find("->");
  const std::string_view lhs = subscripts.substr(0, arrow);
  std::vector<Term> terms;
  for (std::size_t start = 0;;) {
    const auto comma = lhs.find(',', start);
    terms.push_back(parse_term(lhs.substr(start, comma == std::string_view::npos ? lhs.size() - start : comma - start), subscripts));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  if (terms.size() != shapes.size())
    throw ShapeError(fmt::format("einsum: subscripts '{}' name {} operands, {} given", subscripts, terms.size(), shapes.size()));
  // The broadcast rank of "...": the most axes any operand's ellipsis covers.
  std::int64_t dots = 0;
  std::vector<std::int64_t> covered(terms.size(), 0);
  for (std::size_t i = 0; i < terms.size(); ++i) {
    const auto named = static_cast<std::int64_t>(terms[i].letters.size()) - (terms[i].ellipsis ? 1 : 0);
    const auto rank = static_cast<std::int64_t>(shapes[i].size());
    if (terms[i].ellipsis ? rank < named : rank != named)
      throw ShapeError(fmt::format("einsum: operand {} has shape {} ({} axes), but its subscripts in '{}' name {}", i, shapes[i].str(),
                                   rank, subscripts, named));
    covered[i] = rank - named;
    dots = std::max(dots, covered[i]);
  }
  Spec spec;
  spec.size.assign(static_cast<std::size_t>(kEllipsisBase + dots), -1);
  for (std::size_t i = 0; i < terms.size(); ++i) {
    Labels ls;
    for (int l : terms[i].letters) {
      if (l != kDots) {
        ls.push_back(l);
        continue;
      }
      for (std::int64_t k = dots - covered[i]; k < dots; ++k) ls.push_back(kEllipsisBase + static_cast<int>(k));
    }
    for (std::size_t a = 0; a < ls.size(); ++a) {
      auto& s = spec.size[static_cast<std::size_t>(ls[a])];
      const auto d = shapes[i][a];
      if (s == -1 || s == 1) s = d;
      else if (d != s && d != 1)
        throw ShapeError(fmt::format("einsum: label '{}' has size {} in operand {} ({}) but {} elsewhere in '{}'", label_name(ls[a]), d, i,
                                     shapes[i].str(), s, subscripts));
    }
    spec.inputs.push_back(std::move(ls));
  }
  std::vector<int> count(spec.size.size(), 0);
  for (const auto& ls : spec.inputs)
    for (int l : ls) ++count[static_cast<std::size_t>(l)];
  if (arrow == std::string_view::npos) {
    // Implicit output: the broadcast axes, then the labels used once, in alphabetical order.
    for (std::int64_t k = 0; k < dots; ++k) spec.output.push_back(kEllipsisBase + static_cast<int>(k));
    for (int l = 0; l < kEllipsisBase; ++l)
      if (count[static_cast<std::size_t>(l)] == 1) spec.output.push_back(l);
  } else {
    const Term out = parse_term(subscripts.substr(arrow + 2), subscripts);
    for (int l : out.letters) {
      if (l == kDots) {
        for (std::int64_t k = 0; k < dots; ++k) spec.output.push_back(kEllipsisBase + static_cast<int>(k));
        continue;
      }
      if (count[static_cast<std::size_t>(l)] == 0)
        throw ShapeError(fmt::format("einsum: output label '{}' in '{}' appears in no operand", label_char(l), subscripts));
      if (std::find(spec.output.begin(), spec.output.end(), l) != spec.output.end())
        throw ShapeError(fmt::format("einsum: output label '{}' repeated in '{}'", label_char(l), subscripts));
      spec.output.push_back(l);
    }
  }
  return spec;
}

bool has(const Labels& ls, int l) { return std::find(ls.begin(), ls.end(), l) != ls.end(); }

// The labels an operand keeps after its diagonals and private sums: each once, those that the
// output or another operand has.
Labels reduced_labels(const Spec& spec, std::size_t i) {
  Labels out;
  for (int l : spec.inputs[i]) {
    if (has(out, l)) continue;
    bool needed = has(spec.output, l);
    for (std::size_t j = 0; j < spec.inputs.size() && !needed; ++j) needed = j != i && has(spec.inputs[j], l);
    if (needed) out.push_back(l);
  }
  return out;
}

// ---- the contraction order ----------------------------------------------------------------------

struct Pairing {
  Labels result;
  double cost = 0;
};
// Contracting a and b while `others` (and the output) remain: the result keeps the labels that
// are still needed; the cost is the product of the sizes of every label of a or b.
Pairing pair_up(const Spec& spec, const Labels& a, const Labels& b, const std::vector<Labels>& others) {
  Pairing p;
  p.cost = 1;
  Labels all = a;
  for (int l : b)
    if (!has(all, l)) all.push_back(l);
  for (int l : all) {
    p.cost *= static_cast<double>(spec.size[static_cast<std::size_t>(l)]);
    bool keep = has(spec.output, l);
    for (const auto& o : others) keep = keep || has(o, l);
    if (keep) p.result.push_back(l);
  }
  return p;
}

std::vector<Labels> without(const std::vector<Labels>& ops, std::size_t i, std::size_t j) {
  std::vector<Labels> rest;
  for (std::size_t k = 0; k < ops.size(); ++k)
    if (k != i && k != j) rest.push_back(ops[k]);
  return rest;
}

void search_optimal(const Spec& spec, const std::vector<Labels>& ops, double so_far, std::vector<std::pair<std::size_t, std::size_t>>& path,
                    EinsumPath& best) {
  if (so_far >= best.cost) return;
  if (ops.size() <= 1) {
    best.cost = so_far;
    best.contractions = path;
    return;
  }
  for (std::size_t i = 0; i < ops.size(); ++i)
    for (std::size_t j = i + 1; j < ops.size(); ++j) {
      std::vector<Labels> rest = without(ops, i, j);
      const Pairing p = pair_up(spec, ops[i], ops[j], rest);
      rest.push_back(p.result);
      path.emplace_back(i, j);
      search_optimal(spec, rest, so_far + p.cost, path, best);
      path.pop_back();
    }
}

EinsumPath plan_path(const Spec& spec) {
  std::vector<Labels> ops;
  for (std::size_t i = 0; i < spec.inputs.size(); ++i) ops.push_back(reduced_labels(spec, i));
  EinsumPath best;
  {  // left to right
    std::vector<Labels> cur = ops;
    while (cur.size() > 1) {
      std::vector<Labels> rest = without(cur, 0, 1);
      const Pairing p = pair_up(spec, cur[0], cur[1], rest);
      best.naive_cost += p.cost;
      rest.insert(rest.begin(), p.result);
      cur = std::move(rest);
    }
  }
  if (ops.size() <= 5) {
    best.cost = std::numeric_limits<double>::infinity();
    std::vector<std::pair<std::size_t, std::size_t>> path;
    search_optimal(spec, ops, 0.0, path, best);
    return best;
  }
  best.optimal = false;
  while (ops.size() > 1) {  // greedy: the cheapest pair, then the smaller result
    std::size_t bi = 0, bj = 1;
    Pairing bp;
    double best_size = 0;
    bp.cost = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < ops.size(); ++i)
      for (std::size_t j = i + 1; j < ops.size(); ++j) {
        const Pairing p = pair_up(spec, ops[i], ops[j], without(ops, i, j));
        double size = 1;
        for (int l : p.result) size *= static_cast<double>(spec.size[static_cast<std::size_t>(l)]);
        if (p.cost < bp.cost || (p.cost == bp.cost && size < best_size)) bp = p, bi = i, bj = j, best_size = size;
      }
    std::vector<Labels> rest = without(ops, bi, bj);
    rest.push_back(bp.result);
    ops = std::move(rest);
    best.cost += bp.cost;
    best.contractions.emplace_back(bi, bj);
  }
  return best;
}

// ---- evaluation ---------------------------------------------------------------------------------

struct Operand {
  Tensor t;
  Labels labels;
};

Shape sizes_of(const Spec& spec, const Labels& ls) {
  Shape s;
  for (int l : ls) s.push_back(spec.size[static_cast<std::size_t>(l)]);
  return s;
}
std::int64_t numel_of(const Spec& spec, const Labels& ls) { return sizes_of(spec, ls).numel(); }

// Permutes an operand's axes into the order of `ls` (a permutation of its labels).
Tensor arrange(const Operand& o, const Labels& ls) {
  Axes perm;
  for (int l : ls) perm.push_back(std::find(o.labels.begin(), o.labels.end(), l) - o.labels.begin());
  return permute(o.t, perm);
}

// Its diagonals taken, size-1 axes broadcast, and the labels in `keep` only.
Operand prepare(const Spec& spec, Tensor x, Labels ls, const Labels& keep) {
  Shape full = sizes_of(spec, ls);
  if (full != x.shape()) x = broadcast_to(x, full);
  for (bool repeated = true; repeated;) {
    repeated = false;
    for (std::size_t p = 0; p < ls.size() && !repeated; ++p)
      for (std::size_t q = p + 1; q < ls.size() && !repeated; ++q) {
        if (ls[p] != ls[q]) continue;
        // Move p and q to the end; the diagonal of the merged n·n axis is every (n+1)-th element.
        repeated = true;
        const int l = ls[p];
        Labels rest;
        Axes perm;
        for (std::size_t k = 0; k < ls.size(); ++k)
          if (k != p && k != q) {
            perm.push_back(static_cast<std::int64_t>(k));
            rest.push_back(ls[k]);
          }
        perm.push_back(static_cast<std::int64_t>(p));
        perm.push_back(static_cast<std::int64_t>(q));
        const std::int64_t n = spec.size[static_cast<std::size_t>(l)];
        Tensor y = permute(x, perm);
        Shape merged = y.shape().slice(0, rest.size());
        merged.push_back(n * n);
        x = slice(reshape(y, merged), -1, 0, std::nullopt, n + 1);
        rest.push_back(l);
        ls = std::move(rest);
      }
  }
  Axes drop;
  Labels kept;
  for (std::size_t k = 0; k < ls.size(); ++k)
    if (has(keep, ls[k])) kept.push_back(ls[k]);
    else drop.push_back(static_cast<std::int64_t>(k));
  if (!drop.empty()) x = sum(x, drop);
  return {x, kept};
}

// One pairwise contraction as a matmul; `result` lists the labels to keep, in any order.
Operand contract(const Spec& spec, const Operand& a, const Operand& b, const Labels& result) {
  Labels batch, a_only, b_only, summed;
  for (int l : a.labels) {
    if (has(b.labels, l)) (has(result, l) ? batch : summed).push_back(l);
    else a_only.push_back(l);
  }
  for (int l : b.labels)
    if (!has(a.labels, l)) b_only.push_back(l);
  auto cat = [](std::initializer_list<const Labels*> parts) {
    Labels out;
    for (const auto* p : parts) out.insert(out.end(), p->begin(), p->end());
    return out;
  };
  const std::int64_t nb = numel_of(spec, batch), m = numel_of(spec, a_only), k = numel_of(spec, summed), n = numel_of(spec, b_only);
  Tensor at = arrange(a, cat({&batch, &a_only, &summed})), bt = arrange(b, cat({&batch, &summed, &b_only}));
  Tensor r;
  if (batch.empty()) r = matmul(reshape(at, {m, k}), reshape(bt, {k, n}));
  else r = matmul(reshape(at, {nb, m, k}), reshape(bt, {nb, k, n}));
  Labels out = cat({&batch, &a_only, &b_only});
  return {reshape(r, sizes_of(spec, out)), out};
}

}  // namespace

EinsumPath einsum_path(std::string_view subscripts, const std::vector<Shape>& shapes) { return plan_path(parse(subscripts, shapes)); }

Tensor einsum(std::string_view subscripts, const std::vector<Tensor>& operands) {
  if (operands.empty()) throw ValueError("einsum: no operands given");
  std::vector<Shape> shapes;
  DType t = operands[0].dtype();
  for (const auto& x : operands) {
    shapes.push_back(x.shape());
    t = promote_types(t, x.dtype());
  }
  const Spec spec = parse(subscripts, shapes);
  std::vector<Operand> ops;
  for (std::size_t i = 0; i < operands.size(); ++i)
    ops.push_back(prepare(spec, cast(operands[i], t), spec.inputs[i], reduced_labels(spec, i)));
  const EinsumPath path = plan_path(spec);
  for (const auto& [i, j] : path.contractions) {
    std::vector<Labels> others;
    for (std::size_t q = 0; q < ops.size(); ++q)
      if (q != i && q != j) others.push_back(ops[q].labels);
    const Pairing p = pair_up(spec, ops[i].labels, ops[j].labels, others);
    Operand r = contract(spec, ops[i], ops[j], p.result);
    ops.erase(ops.begin() + static_cast<std::ptrdiff_t>(j));
    ops.erase(ops.begin() + static_cast<std::ptrdiff_t>(i));
    ops.push_back(std::move(r));
  }
  // What is left has the output's labels, each once.
  return arrange(ops[0], spec.output);
}

}  // namespace chainrule
