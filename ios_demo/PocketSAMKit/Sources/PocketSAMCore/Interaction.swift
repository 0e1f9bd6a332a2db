import Foundation

/// What the user has clicked on the current image, in the original frame: include points (tap), exclude points
/// (long-press) and at most one box (drag; a new drag replaces it). Every change can be undone in order; `clear`
/// forgets everything (and is itself undoable, so a slip costs nothing). The app turns it into a `Prompt` after
/// each change and keeps the chosen multimask output here too, so a new prompt starts from the best mask again.
public struct Interaction: Sendable {
    /// One point in the original frame.
    public struct Point: Equatable, Sendable {
        public let x: Double, y: Double, include: Bool
        public init(x: Double, y: Double, include: Bool) { self.x = x; self.y = y; self.include = include }
    }

    /// A box in the original frame, corners in any order (put in order by `prompt`).
    public struct Box: Equatable, Sendable {
        public let x0: Double, y0: Double, x1: Double, y1: Double
        public init(x0: Double, y0: Double, x1: Double, y1: Double) { self.x0 = x0; self.y0 = y0; self.x1 = x1; self.y1 = y1 }
    }

    private struct State: Equatable, Sendable {
        var points: [Point]
        var box: Box?
    }

    private let labels: Contract.Labels
    private var state = State(points: [], box: nil)
    private var history: [State] = []

    /// The multimask output the user chose (0..<count), or nil for the one with the best predicted IoU.
    public var chosenMask: Int?

    public init(contract: Contract) { labels = contract.labels }

    public var points: [Point] { state.points }
    public var box: Box? { state.box }
    public var isEmpty: Bool { state.points.isEmpty && state.box == nil }
    public var canUndo: Bool { !history.isEmpty }

    private mutating func change(_ next: State) {
        history.append(state)
        state = next
        chosenMask = nil
    }

    public mutating func include(x: Double, y: Double) {
        change(State(points: state.points + [Point(x: x, y: y, include: true)], box: state.box))
    }

    public mutating func exclude(x: Double, y: Double) {
        change(State(points: state.points + [Point(x: x, y: y, include: false)], box: state.box))
    }

    public mutating func setBox(x0: Double, y0: Double, x1: Double, y1: Double) {
        change(State(points: state.points, box: Box(x0: x0, y0: y0, x1: x1, y1: y1)))
    }

    /// Forget every point and the box (undoable).
    public mutating func clear() {
        if !isEmpty { change(State(points: [], box: nil)) }
    }

    /// Undo the last change; false when there is none.
    @discardableResult
    public mutating func undo() -> Bool {
        guard let last = history.popLast() else { return false }
        state = last
        chosenMask = nil
        return true
    }

    /// Forget everything, history included (a new image).
    public mutating func reset() {
        state = State(points: [], box: nil)
        history.removeAll()
        chosenMask = nil
    }

    /// The prompt of the current points and box, or nil when there are none. Box corners are put in order.
    public func prompt() -> Prompt? {
        if isEmpty { return nil }
        let xy = state.points.flatMap { [$0.x, $0.y] }
        let codes = state.points.map { $0.include ? labels.foreground : labels.background }
        let b = state.box.map { [min($0.x0, $0.x1), min($0.y0, $0.y1), max($0.x0, $0.x1), max($0.y0, $0.y1)] }
        return try! Prompt(points: xy, labels: codes, box: b)  // counts match by construction
    }

    /// The mask to show of `prediction`: the chosen one, else the best predicted IoU.
    public func shownMask(_ prediction: Prediction) -> Int {
        if let c = chosenMask, c >= 0, c < prediction.count { return c }
        return prediction.bestIndex
    }
}

/// What a touch on the photo was, from how far it moved and how long it lasted: the app tells tap (include point),
/// long-press (exclude point) and drag (box) apart with one recogniser, since SwiftUI's tap, long-press and drag
/// recognisers fight over the same touch.
public enum Touch: Equatable, Sendable {
    case tap, longPress, drag

    /// Below `slop` points of movement a touch is a tap, or a long-press when held `hold` seconds or more.
    public static func classify(distance: Double, seconds: Double, slop: Double = 10, hold: Double = 0.5) -> Touch {
        distance < slop ? (seconds >= hold ? .longPress : .tap) : .drag
    }
}
