(function () {
  var grid = document.getElementById("grid");
  var select = document.getElementById("sort-key");
  var button = document.getElementById("sort-order");
  if (!grid || !select || !button) return;
  var reversed = false;
  function order(card) { return Number(card.getAttribute("data-sort-index")); }
  function apply() {
    var key = select.value;
    var option = select.options[select.selectedIndex];
    var dir = option.getAttribute("data-dir") === "desc" ? -1 : 1;
    if (reversed) dir = -dir;
    var cards = Array.prototype.slice.call(grid.querySelectorAll("article.card"));
    cards.sort(function (a, b) {
      var va = a.getAttribute("data-sort-" + key), vb = b.getAttribute("data-sort-" + key);
      if (va === null || vb === null) {  // missing values (failed inputs) always go last
        if (va === null && vb === null) return order(a) - order(b);
        return va === null ? 1 : -1;
      }
      var na = Number(va), nb = Number(vb);
      var c = isNaN(na) || isNaN(nb) ? va.localeCompare(vb) : na - nb;
      return c !== 0 ? dir * c : order(a) - order(b);
    });
    cards.forEach(function (card) { grid.appendChild(card); });
    button.textContent = dir < 0 ? "descending \u2193" : "ascending \u2191";
  }
  select.addEventListener("change", function () { reversed = false; apply(); });
  button.addEventListener("click", function () { reversed = !reversed; apply(); });
  apply();
})();
