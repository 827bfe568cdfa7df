// Small hand-written SVG plots for the operators' page (no plotting library: the machines are offline).
// linePlot: series of (x, y) points; barPlot: grouped bars per category. Hovering a mark shows its value.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const BOX = {width: 400, height: 200, left: 46, right: 12, top: 24, bottom: 30};

function svgElement(name, attributes = {}, text) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

// Three significant digits at most, without trailing zeros: 0.02, 1.5, 0.625, 1234.
function formatNumber(value) {
  return Math.abs(value) >= 100 ? String(Math.round(value)) : String(Number(value.toPrecision(3)));
}

// Axes, y range labels and a legend; returns the svg and y(value) -> pixel.
function frame(series, yMin, yMax) {
  const svg = svgElement("svg", {class: "plot", width: BOX.width, height: BOX.height,
                                 viewBox: `0 0 ${BOX.width} ${BOX.height}`, role: "img"});
  const bottom = BOX.height - BOX.bottom;
  const y = (value) => bottom - ((value - yMin) / (yMax - yMin)) * (bottom - BOX.top);
  svg.append(
    svgElement("line", {class: "axis", x1: BOX.left, y1: BOX.top, x2: BOX.left, y2: bottom}),
    svgElement("line", {class: "axis", x1: BOX.left, y1: bottom, x2: BOX.width - BOX.right, y2: bottom}),
    svgElement("text", {x: BOX.left - 4, y: BOX.top + 4, "text-anchor": "end"}, formatNumber(yMax)),
    svgElement("text", {x: BOX.left - 4, y: bottom, "text-anchor": "end"}, formatNumber(yMin)),
  );
  series.forEach((each, i) => {
    const x = BOX.left + i * 140;
    svg.append(svgElement("rect", {class: `s${i}`, x, y: 6, width: 10, height: 10}),
               svgElement("text", {x: x + 14, y: 15}, each.name));
  });
  return {svg, y, bottom};
}

// series: [{name, points: [{x, y}]}]; xFormat turns an x value into its axis label.
function linePlot(series, xFormat = formatNumber) {
  const points = series.flatMap((each) => each.points);
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  let [xMin, xMax, yMin, yMax] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (xMin === xMax) [xMin, xMax] = [xMin - 1, xMax + 1];  // one point: centre it rather than divide by 0
  if (yMin === yMax) [yMin, yMax] = [yMin - 1, yMax + 1];
  const {svg, y, bottom} = frame(series, yMin, yMax);
  const x = (value) => BOX.left + ((value - xMin) / (xMax - xMin)) * (BOX.width - BOX.left - BOX.right);
  svg.append(svgElement("text", {x: BOX.left, y: bottom + 16}, xFormat(xMin)),
             svgElement("text", {x: BOX.width - BOX.right, y: bottom + 16, "text-anchor": "end"}, xFormat(xMax)));
  series.forEach((each, i) => {
    svg.append(svgElement("polyline", {class: `s${i}`, "data-series": each.name,
                                       points: each.points.map((p) => `${x(p.x)},${y(p.y)}`).join(" ")}));
    if (each.points.length > 240) return;  // a day of minutes: the line alone, not 1440 hover dots
    for (const p of each.points) {
      const dot = svgElement("circle", {class: `s${i}`, cx: x(p.x), cy: y(p.y), r: 2.5});
      dot.append(svgElement("title", {}, `${each.name} at ${xFormat(p.x)}: ${formatNumber(p.y)}`));
      svg.append(dot);
    }
  });
  return svg;
}

// categories: ["v0001", ...]; series: [{name, values: [number | null per category]}] in [0, yMax].
// A null value (nothing measured yet) draws no bar. `guide` draws a dashed line, e.g. at 0.5.
function barPlot(categories, series, {yMax = 1, guide = null} = {}) {
  const {svg, y, bottom} = frame(series, 0, yMax);
  const group = (BOX.width - BOX.left - BOX.right) / categories.length;
  const bar = group / (series.length + 1);
  categories.forEach((category, c) => {
    const left = BOX.left + c * group;
    svg.append(svgElement("text", {x: left + group / 2, y: bottom + 14, "text-anchor": "middle"}, category));
    series.forEach((each, i) => {
      const value = each.values[c];
      if (value === null || value === undefined) return;
      const rect = svgElement("rect", {class: `bar s${i}`, "data-category": category, "data-series": each.name,
                                       x: left + bar / 2 + i * bar, y: y(value), width: bar - 1, height: bottom - y(value)});
      rect.append(svgElement("title", {}, `${category} ${each.name}: ${formatNumber(value)}`));
      svg.append(rect);
    });
  });
  if (guide !== null) {
    svg.append(svgElement("line", {class: "axis", x1: BOX.left, x2: BOX.width - BOX.right, y1: y(guide), y2: y(guide),
                                   "stroke-dasharray": "4 3"}));
  }
  return svg;
}
